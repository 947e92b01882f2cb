"""vddkpy's benchmark: nbdkit servers measured with fio and hyperfine.

Run it as ``/usr/bin/python3 scripts/bench.py``; the modules are

  tools      which external programs are needed, and what to install
  machine    CPU time of the machine and of processes (/proc)
  servers    the nbdkit command of each server, long-running servers
  fio        random I/O through fio's nbd engine, and its JSON
  hyperfine  whole commands through hyperfine, and its JSON
  results    a case's samples per server and their statistics
  rounds     servers taking turns, round after round
  verdict    whether a run can rank servers (the baseline rule)
  report     Markdown table, ranking and goals, JSON, PNG
  cases/     one module per kind of case
"""
