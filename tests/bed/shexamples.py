"""The ```sh examples of a Markdown text (README.md, the man page's
source): each block is one script, since a line may set what the next
one uses."""

import re


def sh_examples(text):
    return [block.strip()
            for block in re.findall(r"```sh\n(.*?)```", text, re.S)]
