"""`tools/device_check.sh`: every `vist-rt` command it runs parses with today's flags (it runs once, on a lent GPU)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from vist_rt.cli import build_parser

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "device_check.sh"


def _commands() -> list[list[str]]:
    """The arguments after `-m vist_rt` of each command in the script, shell variables filled in."""
    text = re.sub(r"\\\n\s*", " ", SCRIPT.read_text())  # continuation lines joined
    out = []
    for line in text.splitlines():
        if '"$PY" -m vist_rt ' not in line:
            continue
        cmd = line.split('"$PY" -m vist_rt ', 1)[1].split(" 2>&1", 1)[0]
        cmd = cmd.replace('"${rt[@]}"', "--rt-priority 10").replace('"$OUT_DIR', '"out')
        out.append(shlex.split(cmd))
    return out


def test_every_command_parses_with_todays_flags() -> None:
    commands = _commands()
    assert [c[:2] for c in commands] == [["bench", "gpu"], ["bench", "pipeline"]]
    parser = build_parser()
    gpu, pipeline = (parser.parse_args(c) for c in commands)  # a renamed flag: SystemExit here
    assert gpu.frames == 500 and gpu.warmup == 50
    # issue 17's figure on the host's cores: several stream counts, under SCHED_FIFO where it can be had
    assert pipeline.streams == (1, 2, 4) and pipeline.rt_priority == 10 and pipeline.json == "out/device-streams.json"
    assert pipeline.checkpoint is None  # the shipped demo model: nothing to copy onto the machine
