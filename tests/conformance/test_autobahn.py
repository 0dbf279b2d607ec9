"""Autobahn|Testsuite conformance of upwire's server and client (RFC 6455 cases).

The suite is not part of this repository: it lives in ../shared/autobahn, beside the checkout (CI lays a
read-only copy there). Without it these tests are skipped with a message that says so; that is their only
skip. Its venv is built once in $AUTOBAHN_HOME (default ~/.cache/autobahn-py3), outside shared/.

Every selected case must be OK: no NON-STRICT, FAILED or UNIMPLEMENTED verdict, and INFORMATIONAL only
for the cases the suite always marks informational.

Environment:
    UPWIRE_AUTOBAHN=ci|full   ci (default, part of `./run test`): cases 1-7 and 10, plus a subset of the
                              permessage-deflate cases 12/13 (their small messages); full
                              (`./run conformance-full`): adds 9.* (limits, performance) and all of 12.*
                              and 13.* (permessage-deflate, RFC 7692).
    UPWIRE_AUTOBAHN_CASES     an explicit case list instead, e.g. "6.4.*,7.1.5", to re-run a few cases.
    UPWIRE_AUTOBAHN_REPORTS   keep reports and summaries in this folder (server/, client/) instead of
                              pytest's temporary folder.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
AUTOBAHN_DIR = REPO.parent / "shared" / "autobahn"

MODE = os.environ.get("UPWIRE_AUTOBAHN", "ci")
CI_CASES = "1.*,2.*,3.*,4.*,5.*,6.*,7.*,10.*"
FULL_CASES = "1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*"
# permessage-deflate (RFC 7692). Every 12.x.y / 13.x.y case sends 1000 messages; y = 1..4 are 16 B to
# 1 KiB, y = 5..18 are 4 KiB to 128 KiB, y = 11..18 auto-fragmented; the largest take minutes each on a
# slow machine. CI takes y = 1..4 and 11 (8 KiB messages in 256-byte fragments) of 12.1 (JSON text),
# 12.2 (a bitmap) and of the offers 13.1 (default), 13.3 (window 9), 13.5 (no context takeover + window
# 9) and 13.7 (a list of offers): 30 cases, about 25 s per side. The full run takes everything.
DEFLATE_CASES_ENABLED = True
DEFLATE_CI_CASES = ",".join(
    f"{group}.{y}"
    for group in ("12.1", "12.2", "13.1", "13.3", "13.5", "13.7")
    for y in (1, 2, 3, 4, 11)
)
if DEFLATE_CASES_ENABLED:
    CI_CASES += "," + DEFLATE_CI_CASES
    FULL_CASES += ",12.*,13.*"
CASES = os.environ.get("UPWIRE_AUTOBAHN_CASES") or (FULL_CASES if MODE == "full" else CI_CASES)

# Whole run of one side (server or client). The grader gets a bit less, so that a slow run still ends
# with its summary rather than with pytest-timeout's stack dump.
RUN_TIMEOUT_S = 3 * 3600 if MODE == "full" else 300
GRADER_TIMEOUT_S = RUN_TIMEOUT_S - 60

# Cases whose verdict is INFORMATIONAL whatever the implementation does (their case files set
# `behavior = Case.INFORMATIONAL` unconditionally): 7.1.6 (a message and a close sent back to back),
# 7.13.1 and 7.13.2 (close codes outside the ranges RFC 6455 defines).
INFORMATIONAL_CASES = frozenset({"7.1.6", "7.13.1", "7.13.2"})

# The graders' --no-deflate drops 12.* and 13.* whatever the case list says.
DEFLATE_FLAGS = [] if DEFLATE_CASES_ENABLED else ["--no-deflate"]

SERVER_MAX_MESSAGE_SIZE = 20_000_000  # 9.* sends messages of up to 16 MiB

pytestmark = [pytest.mark.conformance, pytest.mark.timeout(RUN_TIMEOUT_S)]


@pytest.fixture
def autobahn_dir() -> Path:
    if not (AUTOBAHN_DIR / "grade-server.sh").is_file():
        pytest.skip(
            f"../shared/autobahn not found ({AUTOBAHN_DIR}): Autobahn conformance not checked"
        )
    return AUTOBAHN_DIR


@pytest.fixture
def report_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    keep = os.environ.get("UPWIRE_AUTOBAHN_REPORTS")
    side = "server" if "server" in request.node.name else "client"
    folder = Path(keep) / side if keep else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def grader_env() -> dict[str, str]:
    env = dict(os.environ)
    # Build and keep the suite's venv outside shared/ (read-only in CI, shared between checkouts).
    cache = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    env.setdefault("AUTOBAHN_HOME", str(Path(cache) / "autobahn-py3"))
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} not written)"
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture
def echo_server(report_dir: Path) -> Iterator[int]:
    """`python -m upwire serve --echo` on a free loopback port; yields the port once it accepts."""
    port = free_port()
    log_path = report_dir / "upwire-server.log"
    command = [sys.executable, "-m", "upwire", "serve", "--echo", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--max-message-size", str(SERVER_MAX_MESSAGE_SIZE)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"{' '.join(command)} exited with {process.returncode} before accepting:\n"
                    + tail(log_path)
                )
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"upwire echo server not accepting on port {port} after 20 s")
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_grader(command: list[str], report_dir: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command,
        cwd=REPO,
        env=grader_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S - 20,
    )
    (report_dir / "summary.txt").write_text(result.stdout + result.stderr)
    print(result.stdout + result.stderr)  # shown on failure, and always with `pytest -s`
    return result


def read_verdicts(outdir: Path) -> dict[str, dict[str, str]]:
    """{case id: {"behavior": ..., "behaviorClose": ...}} of the one agent in outdir/index.json."""
    with (outdir / "index.json").open(encoding="utf-8") as file:
        index = json.load(file)
    assert len(index) == 1, f"expected one agent in {outdir / 'index.json'}, found {sorted(index)}"
    (cases,) = index.values()
    return {case_id: dict(result) for case_id, result in cases.items()}


def case_sort_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case_id.split("."))


def assert_all_ok(result: subprocess.CompletedProcess[str], outdir: Path) -> None:
    output = (result.stdout + result.stderr).strip()
    if not (outdir / "index.json").is_file():
        pytest.fail(f"the grader produced no results (exit {result.returncode}):\n{output}")
    verdicts = read_verdicts(outdir)
    groups_run = {case_id.split(".")[0] for case_id in verdicts}
    groups_wanted = {pattern.split(".")[0] for pattern in CASES.split(",") if pattern.strip()}
    assert groups_wanted <= groups_run, (
        f"case groups missing from the run: {groups_wanted - groups_run}"
    )

    bad = []
    for case_id in sorted(verdicts, key=case_sort_key):
        allowed = {"OK", "INFORMATIONAL"} if case_id in INFORMATIONAL_CASES else {"OK"}
        behavior = verdicts[case_id].get("behavior")
        behavior_close = verdicts[case_id].get("behaviorClose")
        if behavior not in allowed or behavior_close not in allowed:
            report = verdicts[case_id].get("reportfile", "")
            bad.append(f"  {case_id}: {behavior} (close: {behavior_close}) {outdir / report}")
    if bad or result.returncode != 0:
        pytest.fail(
            f"{len(bad)} of {len(verdicts)} Autobahn cases not OK (grader exit {result.returncode}):\n"
            + "\n".join(bad)
            + "\n"
            + "\n".join(line for line in output.splitlines() if line.startswith("autobahn:"))
            + "\n(the grader's full summary is in the captured stdout below)"
        )


def test_server_passes_autobahn_cases(
    autobahn_dir: Path, report_dir: Path, echo_server: int
) -> None:
    outdir = report_dir / "autobahn"
    command = [str(autobahn_dir / "grade-server.sh"), *DEFLATE_FLAGS, "--agent", "upwire"]
    command += ["--outdir", str(outdir), "--timeout", str(GRADER_TIMEOUT_S)]
    command += ["127.0.0.1", str(echo_server), CASES]
    result = run_grader(command, report_dir)
    if result.returncode != 0:
        print("upwire server log (last lines):\n" + tail(report_dir / "upwire-server.log"))
    assert_all_ok(result, outdir)


def test_client_passes_autobahn_cases(autobahn_dir: Path, report_dir: Path) -> None:
    outdir = report_dir / "autobahn"
    command = [str(autobahn_dir / "grade-client.sh"), *DEFLATE_FLAGS, "--agent", "upwire"]
    command += ["--cases", CASES, "--outdir", str(outdir), "--timeout", str(GRADER_TIMEOUT_S)]
    command += ["--", sys.executable, str(HERE / "autobahn_client.py")]
    result = run_grader(command, report_dir)
    if result.returncode != 0:
        print("client runner log (last lines):\n" + tail(outdir / "client.log"))
    assert_all_ok(result, outdir)
