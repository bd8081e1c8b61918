"""ServerCommand: one command line for `vintage serve`, the local deploy target and a container image."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from vintage.serving.launch import ServerCommand, start


def test_argv_names_only_what_is_set_and_takes_any_interpreter() -> None:
    cmd = ServerCommand("/models/wine/3", port=8080)
    assert cmd.argv("python3") == [
        "python3",
        "-m",
        "vintage.serving",
        "--model-dir",
        "/models/wine/3",
        "--port",
        "8080",
    ]
    assert cmd.argv()[0] == sys.executable
    assert cmd.options() == cmd.argv("python3")[3:]


def test_a_deploy_command_line_carries_every_option() -> None:
    secrets = {"providers": ["local"]}
    argv = ServerCommand(
        Path("/s/models/m"),
        host="127.0.0.1",
        port=9000,
        workers=2,
        model_digest="sha256:" + "a" * 64,
        admin_socket=Path("/s/envs/staging/admin.sock"),
        model_store=Path("/s/models"),
        environment="staging",
        state_dir=Path("/s"),
        api_key_scope="staging/serving",
        secrets=secrets,
        public_metadata=True,
        open_network=True,
        max_body_bytes=1024,
        max_rows=5,
        timeout_s=2.5,
        extra=("--max-header-kb", "8"),
    ).argv("/usr/bin/python3")
    opts = argv[3:]
    pairs = dict(zip(opts[0::2], opts[1::2], strict=False))
    assert pairs["--model-dir"] == "/s/models/m" and pairs["--port"] == "9000" and pairs["--workers"] == "2"
    assert pairs["--admin-socket"] == "/s/envs/staging/admin.sock" and pairs["--model-store"] == "/s/models"
    assert pairs["--timeout"] == "2.5" and pairs["--max-body-bytes"] == "1024" and pairs["--max-rows"] == "5"
    i = opts.index("--secrets-json")
    assert opts[i - 2 : i] == ["--api-key-scope", "staging/serving"] and json.loads(opts[i + 1]) == secrets
    assert "--public-metadata" in opts and "--allow-unauthenticated-network-access" in opts
    assert opts[-2:] == ["--max-header-kb", "8"]


def test_secrets_settings_go_only_with_a_key_scope() -> None:
    argv = ServerCommand("m", api_key_file="/k", secrets={"providers": ["env"]}).argv("python3")
    assert "--secrets-json" not in argv and argv[-2:] == ["--api-key-file", "/k"]


def test_every_option_is_one_the_server_accepts(tmp_path: Path) -> None:
    # The server's own parser reads the line: an unknown option would exit 2 with "unrecognized
    # arguments"; once the options parse, the missing key file is the first error (exit 1).
    log = tmp_path / "server.log"
    cmd = ServerCommand(
        tmp_path / "missing",
        host="127.0.0.1",
        port=0,
        workers=1,
        model_digest="sha256:" + "0" * 64,
        admin_socket=tmp_path / "admin.sock",
        model_store=tmp_path,
        environment="staging",
        state_dir=tmp_path,
        api_key_file=tmp_path / "keys",
        public_metadata=True,
        max_body_bytes=1024,
        max_rows=5,
        timeout_s=1.0,
    )
    with log.open("wb") as fh:
        proc = start(cmd, stdout=fh, cwd=tmp_path)
    try:
        code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    out = log.read_text()
    assert code == 1, out
    assert "unrecognized arguments" not in out and "error:" in out


def test_the_inference_log_settings_become_server_options() -> None:
    settings = {"directory": "/s/envs/staging/inference", "sample": 0.25, "max_queue_rows": 50}
    opts = ServerCommand("/m", inference_log=settings).options()
    assert opts == [
        "--model-dir", "/m", "--inference-log", "/s/envs/staging/inference", "--inference-sample", "0.25",
        "--inference-queue-rows", "50",
    ]  # fmt: skip
    assert "--inference-log" not in ServerCommand("/m").options()


def test_a_worker_reads_the_inference_log_settings_from_the_config_json() -> None:
    import dataclasses

    import orjson

    from vintage.serving.app import ServeConfig
    from vintage.serving.inference_log import InferenceLogSettings

    config = ServeConfig(inference_log=InferenceLogSettings("/x", sample=0.5, rotate_seconds=5.0))
    raw = orjson.loads(orjson.dumps(dataclasses.asdict(config)))
    assert InferenceLogSettings.from_mapping(raw["inference_log"]) == config.inference_log
