"""The ```sh examples of a Markdown text (README.md, the man page's
source), one command per line once continuation lines are joined."""

import re


def sh_examples(text):
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for command in block.replace("\\\n", " ").splitlines():
            if command.strip():
                commands.append(command.strip())
    return commands
