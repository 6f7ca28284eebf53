"""Run a real ``ndmpd serve`` process for integration tests, on loopback and ephemeral ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ADMIN_PASSWORD = "Adm1n-secret"
NDMPD = [sys.executable, "-m", "ndmpd"]
NDMJOB = "/usr/lib/amanda/ndmjob"


def write_config(
    base: Path,
    *,
    tapes: dict[str, str | tuple[str, str]] | None = None,
    mode: str = "svm",
    svms: dict[str, list[str]] | None = None,
    extra: str = "",
    tls: bool = False,
) -> Path:
    tapes = tapes or {"nrst0a": "1G", "nrst1a": "1G", "nrst2a": "1G", "nrst3a": "1G"}
    svms = svms or {"svm1": ["vol1"]}
    lines = [
        f'state_dir = "{base / "state"}"',
        "[ndmp]",
        'listen = "127.0.0.1:0"',
        f'mode = "{mode}"',
        'data_port_range = "0-0"',
        "[rest]",
        'listen = "127.0.0.1:0"',
        f"tls = {'true' if tls else 'false'}",
    ]
    for svm, vols in svms.items():
        lines += ["[[svm]]", f'name = "{svm}"']
        for vol in vols:
            lines += ["  [[svm.volume]]", f'  name = "{vol}"', f'  path = "{base / svm / vol}"']
    for name, spec in tapes.items():  # "capacity", or ("capacity", "speed")
        capacity, speed = (spec, "") if isinstance(spec, str) else spec
        lines += ["[[tape]]", f'name = "{name}"', f'capacity = "{capacity}"']
        if speed:
            lines.append(f'speed = "{speed}"')
    path = base / "ndmpd.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@dataclass
class ServerProcess:
    base: Path
    config: Path
    proc: subprocess.Popen[str]
    port: int = 0
    rest_url: str | None = None
    output: list[str] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.base / "server.log"

    def volume(self, svm: str = "svm1", vol: str = "vol1") -> Path:
        return self.base / svm / vol

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*NDMPD, *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            input=input,
            timeout=60,
        )

    def ndmp_password(self, user: str = "admin", svm: str = "svm1") -> str:
        out = self.cli("password", user, "--svm", svm)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def agent(self, user: str = "admin", password: str | None = None, auth: str = "m") -> str:
        """An ndmjob agent string for this server."""
        pw = password if password is not None else self.ndmp_password(user)
        return f"127.0.0.1:{self.port}/4{auth},{user},{pw}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


def start_server(
    base: Path,
    *,
    env: dict[str, str] | None = None,
    log_level: str = "DEBUG",
    **config_args: object,
) -> ServerProcess:
    base.mkdir(parents=True, exist_ok=True)
    config = write_config(base, **config_args)  # type: ignore[arg-type]
    full_env = dict(os.environ)
    full_env.update(
        {
            "NDMPD_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "NDMPD_LOG_LEVEL": log_level,
            "PYTHONUNBUFFERED": "1",
        }
    )
    full_env.update(env or {})
    log = open(base / "server.log", "ab")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(
        [*NDMPD, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=full_env,
    )
    log.close()
    server = ServerProcess(base=base, config=config, proc=proc)
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            server.output.append(line)
            if m := re.search(r"NDMP listening on 127\.0\.0\.1:(\d+)", line):
                server.port = int(m.group(1))
            if m := re.search(r"REST API at (\S+)", line):
                server.rest_url = m.group(1)
            if "ndmpd: ready" in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 30
    while not ready.wait(0.1):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(
                "ndmpd did not start:\n" + "".join(server.output) + server.log_text()
            )
    return server
