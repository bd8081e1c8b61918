"""The tests' local GitHub Actions executor (tests/support/ci_executor.py) on small synthetic workflows:
order, conditions, outputs, isolation, masking, approvals through the gh shim, kills, re-runs,
provisioning."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.ci_executor import Executor, Kill, RunResult, Status, Workflow, WorkflowError
from vintage.ci import render
from vintage.config import load_spec

PYTHON = Path(sys.executable)
PY_VERSION = "{}.{}".format(*sys.version_info[:2])
HEAD = "name: test\non: workflow_dispatch\n"
CHECKOUT = """\
      - uses: actions/checkout@v4
        with:
          clean: false
"""


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str]:
    """A git repository with one commit (a tracked file ``hello.txt``): its path and commit."""
    path = tmp_path / "repo"
    path.mkdir()
    (path / "hello.txt").write_text("hello from the repo\n")
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "--quiet"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", "init"], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout
    return path, sha.strip()


def _workflow(tmp_path: Path, jobs: str, name: str = "wf.yml", top: str = "") -> Workflow:
    """The workflow with ``jobs`` (YAML, any common indentation) and top-level keys ``top``."""
    path = tmp_path / name
    path.write_text(HEAD + top + "jobs:\n" + textwrap.indent(textwrap.dedent(jobs), "  "), encoding="utf-8")
    return Workflow.load(path)


def _executor(tmp_path: Path, repo: tuple[Path, str], wf: Workflow, **kw: Any) -> Executor:
    return Executor(wf, repo=repo[0], commit=repo[1], python=PYTHON, work_dir=tmp_path, **kw)


def _job(name: str, run: str, extra: str = "") -> str:
    """A job that checks out and runs ``run`` (a one-step script)."""
    body = textwrap.indent(textwrap.dedent(run).strip(), " " * 10)
    head = f"  {name}:\n    runs-on: ubuntu-latest\n{extra}    steps:\n{CHECKOUT}"
    return f"{head}      - name: main\n        run: |\n{body}\n"


def test_jobs_run_in_dependency_order_each_in_a_fresh_clone(tmp_path: Path, repo: tuple[Path, str]) -> None:
    jobs = (
        _job(
            "deploy",
            'cat hello.txt; test ! -e marker; touch marker; echo "ws=$GITHUB_WORKSPACE"',
            "    needs: [test, lint]\n",
        )
        + _job("test", "test ! -e marker; touch marker", "    needs: build\n")
        + _job("build", "test ! -e marker; touch marker")
        + _job("lint", "test ! -e marker; touch marker", "    needs: [build]\n")
    )
    wf = _workflow(tmp_path, jobs)
    assert wf.order == ("build", "test", "lint", "deploy")
    with _executor(tmp_path, repo, wf) as ex:
        result = ex.run(run_id=101)
        assert [result.jobs[j].status for j in wf.order] == [Status.SUCCESS] * 4
        times = [(result.jobs[j].started, result.jobs[j].ended) for j in wf.order]
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(times))
        assert "hello from the repo" in result.jobs["deploy"].log
        workspaces = {
            line for j in wf.order for line in result.jobs[j].log.splitlines() if line.startswith("ws=")
        }
        assert workspaces and not Path(workspaces.pop()[3:]).exists()  # cleaned up


def test_a_cycle_or_an_unknown_need_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="cycle"):
        _workflow(tmp_path, _job("a", "true", "    needs: b\n") + _job("b", "true", "    needs: a\n"))
    with pytest.raises(WorkflowError, match="unknown job"):
        _workflow(tmp_path, _job("a", "true", "    needs: nope\n"))


def test_a_failed_job_skips_its_dependents_unless_always(tmp_path: Path, repo: tuple[Path, str]) -> None:
    jobs = (
        _job("build", "echo failing; exit 3")
        + _job("deploy", "true", "    needs: [build]\n")
        + _job(
            "report", "echo reporting", "    needs: [deploy]\n    if: ${{ always() }}  # condition: always\n"
        )
        + _job("notify", "echo notifying", "    needs: [deploy]\n    if: failure()\n")
        + _job("cleanup", "echo cleaning", "    needs: [deploy]\n    if: ${{ !cancelled() }}\n")
    )
    with _executor(tmp_path, repo, _workflow(tmp_path, jobs)) as ex:
        jobs_ = ex.run(run_id=7).jobs
    assert (jobs_["build"].status, jobs_["build"].exit_code) == (Status.FAILURE, 3)
    assert jobs_["deploy"].status is Status.SKIPPED and jobs_["deploy"].steps == []
    assert [jobs_[j].status for j in ("report", "notify", "cleanup")] == [Status.SUCCESS] * 3
    assert "reporting" in jobs_["report"].log


def test_outputs_and_env_flow_between_steps_and_jobs(tmp_path: Path, repo: tuple[Path, str]) -> None:
    jobs = """\
      produce:
        runs-on: ubuntu-latest
        outputs:
          word: ${{ steps.one.outputs.greeting }}
        steps:
          - id: one
            run: |
              echo "greeting=hello" >> "$GITHUB_OUTPUT"
              printf 'text<<EOF\\nline 1\\nline 2\\nEOF\\n' >> "$GITHUB_OUTPUT"
              echo "FROM_ENV_FILE=set earlier" >> "$GITHUB_ENV"
          - name: use
            env:
              TEXT: ${{ steps.one.outputs.text }}
            run: |
              echo "got ${{ steps.one.outputs.greeting }} / $FROM_ENV_FILE / ${{ env.FROM_ENV_FILE }}"
              echo "$TEXT" | wc -l
      consume:
        runs-on: ubuntu-latest
        needs: produce
        steps:
          - run: echo "word=${{ needs.produce.outputs.word }} result=${{ needs.produce.result }}"
    """
    with _executor(tmp_path, repo, _workflow(tmp_path, jobs)) as ex:
        result = ex.run(run_id=8)
    produce = result.jobs["produce"]
    assert produce.step('Run echo "greeting=hello" >> "$GITHUB_OUTPUT"').outputs == {
        "greeting": "hello",
        "text": "line 1\nline 2",
    }
    assert produce.step("use").log == ["got hello / set earlier / set earlier", "2"]
    assert produce.outputs == {"word": "hello"}
    assert "word=hello result=success" in result.jobs["consume"].log
    assert result.warnings == []


def test_the_environment_is_clean_but_for_github_variables_and_passthrough(
    tmp_path: Path, repo: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEAKY_TEST_VARIABLE", "from the test process")
    monkeypatch.setenv("VINTAGE_CACHE_DIR", str(tmp_path / "cache"))
    jobs = """\
      show:
        runs-on: ubuntu-latest
        env:
          JOB_LEVEL: job
        steps:
          - run: env | cut -d= -f1 | sort; echo "home=$HOME run=$GITHUB_RUN_ID/$GITHUB_RUN_ATTEMPT ci=$CI"
            env:
              STEP_LEVEL: step
    """
    wf = _workflow(tmp_path, jobs, top="env:\n  WORKFLOW_LEVEL: wf\n")
    with _executor(tmp_path, repo, wf, passthrough=["VINTAGE_CACHE_DIR"], runner_env={"RUNNER_X": "1"}) as ex:
        log = ex.run(run_id=9).jobs["show"].log.splitlines()[1:]
    names = set(log[:-1])
    assert "LEAKY_TEST_VARIABLE" not in names and {"VINTAGE_CACHE_DIR", "RUNNER_X"} <= names
    assert {
        "WORKFLOW_LEVEL",
        "JOB_LEVEL",
        "STEP_LEVEL",
        "GITHUB_OUTPUT",
        "GITHUB_ENV",
        "RUNNER_TEMP",
    } <= names
    bash_own = {"PWD", "SHLVL", "_", "OLDPWD"}
    allowed = {"PATH", "HOME", "LANG", "CI", "VINTAGE_CACHE_DIR", "WORKFLOW_LEVEL", "JOB_LEVEL", "STEP_LEVEL"}
    assert {n for n in names - allowed - bash_own if not n.startswith(("GITHUB_", "RUNNER_"))} == set()
    home = log[-1].split()[0].removeprefix("home=")
    assert home != os.environ.get("HOME") and log[-1].endswith("run=9/1 ci=true")


def test_secrets_are_masked_and_a_missing_one_is_empty_with_a_warning(
    tmp_path: Path, repo: tuple[Path, str]
) -> None:
    value = "s3cr3t-Value-42"
    jobs = """\
      leak:
        runs-on: ubuntu-latest
        outputs:
          plain: ${{ steps.s.outputs.plain }}
          holds-secret: ${{ secrets.API_TOKEN }}
        steps:
          - env:
              TOKEN: ${{ secrets.API_TOKEN }}
              NOPE: ${{ secrets.NOT_SET }}
            run: |
              echo "env $TOKEN, inline ${{ secrets.API_TOKEN }}, missing [$NOPE]"
              echo "::add-mask::dynamic-thing"
              echo "later dynamic-thing"
              echo "plain=visible" >> "$GITHUB_OUTPUT"
            id: s
    """
    log_dir = tmp_path / "logs"
    with _executor(
        tmp_path, repo, _workflow(tmp_path, jobs), secrets={"API_TOKEN": value}, log_dir=log_dir
    ) as ex:
        result = ex.run(run_id=10)
    assert result.jobs["leak"].steps[0].log == ["env ***, inline ***, missing []", "later ***"]
    on_disk = "".join(p.read_text() for p in log_dir.rglob("*.log"))
    assert value not in on_disk and "***" in on_disk
    assert any("secrets.NOT_SET" in w for w in result.warnings)
    assert result.jobs["leak"].outputs == {"plain": "visible"}  # GitHub drops an output holding a secret
    assert any("output holds-secret skipped" in w for w in result.warnings)


def test_unsupported_constructs_are_errors(tmp_path: Path) -> None:
    bad_uses = "  a:\n    runs-on: x\n    steps:\n      - uses: actions/cache@v4\n"
    with pytest.raises(WorkflowError, match="actions/cache@v4"):
        _workflow(tmp_path, bad_uses)
    with pytest.raises(WorkflowError, match="strategy"):
        _workflow(tmp_path, "  a:\n    runs-on: x\n    strategy: {}\n    steps:\n      - run: true\n")
    with pytest.raises(WorkflowError, match="unsupported expression"):
        _workflow(tmp_path, _job("a", "echo ${{ github.ref == 'main' }}"))
    with pytest.raises(WorkflowError, match="Unrecognized named-value"):
        _workflow(tmp_path, _job("a", "echo ${{ foo.bar }}"))
    with pytest.raises(WorkflowError, match="shell"):
        _workflow(
            tmp_path, "  a:\n    runs-on: x\n    steps:\n      - run: print(1)\n        shell: python\n"
        )


def test_setup_python_must_match_the_interpreter(tmp_path: Path, repo: tuple[Path, str]) -> None:
    step = (
        "      - uses: actions/setup-python@v5\n        with:\n"
        '          python-version: "{v}"\n      - run: which python\n'
    )
    ok = _workflow(tmp_path, "  a:\n    runs-on: x\n    steps:\n" + step.format(v=PY_VERSION))
    with _executor(tmp_path, repo, ok) as ex:
        assert ex.run(run_id=1).jobs["a"].steps[1].log == [str(PYTHON.parent / "python")]
    wrong = _workflow(tmp_path, "  a:\n    runs-on: x\n    steps:\n" + step.format(v="2.7"), "w.yml")
    with pytest.raises(WorkflowError, match=r"setup-python wants 2\.7"):
        _executor(tmp_path, repo, wrong)


def test_a_provision_hook_replaces_the_named_step(tmp_path: Path, repo: tuple[Path, str]) -> None:
    jobs = _job("a", "cat installed").replace(
        "      - name: main", "      - name: Install\n        run: exit 1  # would fail\n      - name: main"
    )
    wf = _workflow(tmp_path, jobs)
    seen: list[Path] = []

    def install(workspace: Path) -> None:
        seen.append(workspace)
        (workspace / "installed").write_text("linked venv\n")

    with _executor(tmp_path, repo, wf, provision={"Install": install}) as ex:
        result = ex.run(run_id=2).jobs["a"]
    assert result.status is Status.SUCCESS and result.step("main").log == ["linked venv"]
    assert len(seen) == 1 and (seen[0].name == "workspace")
    with pytest.raises(WorkflowError, match="Instal"):
        _executor(tmp_path, repo, wf, provision={"Instal": install})


def _approval_workflow(tmp_path: Path) -> Workflow:
    """A production job whose approver step is the one vintage renders, then one that shows the login."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "vintage.yaml").write_text((Path(__file__).parents[3] / "vintage.yaml").read_text())
    text = render(
        load_spec(project / "vintage.yaml"),
        "github-actions",
        config_path=project / "vintage.yaml",
        cwd=project,
        allow_local_state=True,
    )
    rendered = yaml.safe_load(text)["jobs"]["production"]
    approver = next(s for s in rendered["steps"] if s.get("id") == "approver")
    show = {
        "name": "show",
        "env": {"WHO": "${{ steps.approver.outputs.login }}"},
        "run": 'echo "approved by $WHO"',
    }
    no_token = {
        "name": "no token",
        "if": "always()",
        "run": "gh api repos/x/y/actions/runs/1/approvals || echo code=$?",
    }
    other = {
        "name": "other",
        "if": "always()",
        "env": {"GH_TOKEN": "${{ github.token }}"},
        "run": "gh pr list || echo code=$?",
    }
    job = {"runs-on": "x", "environment": rendered["environment"], "steps": [approver, show, no_token, other]}
    path = tmp_path / "approval.yml"
    path.write_text(yaml.safe_dump({"name": "t", "on": "push", "jobs": {"production": job}}, sort_keys=False))
    return Workflow.load(path)


def test_an_environment_is_approved_by_its_reviewer_through_gh_and_jq(
    tmp_path: Path, repo: tuple[Path, str]
) -> None:
    wf = _approval_workflow(tmp_path)
    with _executor(tmp_path, repo, wf, reviewers={"production": "alice"}, repository="acme/wine") as ex:
        job = ex.run(run_id=555).jobs["production"]
    assert job.status is Status.SUCCESS, job.log
    assert job.step("Who approved production").outputs == {"login": "alice"}
    assert job.step("show").log == ["approved by alice"]
    assert job.step("no token").log[-1] == "code=4" and "GH_TOKEN" in job.step("no token").log[0]
    assert job.step("other").log[-1] == "code=1" and "unsupported invocation" in job.step("other").log[0]


def test_an_environment_without_a_reviewer_is_refused(tmp_path: Path, repo: tuple[Path, str]) -> None:
    with _executor(tmp_path, repo, _approval_workflow(tmp_path), reviewers={"staging": "bob"}) as ex:
        job = ex.run(run_id=556).jobs["production"]
    assert job.status is Status.FAILURE and job.steps == []
    assert job.error is not None and job.error.startswith("environment production needs an approval")
    assert job.log.startswith("##[error]environment production needs an approval")


def test_a_job_killed_mid_step_is_rerun_as_attempt_2(tmp_path: Path, repo: tuple[Path, str]) -> None:
    script = """\
        echo "attempt=$GITHUB_RUN_ATTEMPT run=$GITHUB_RUN_ID"
        test ! -e from-attempt-1
        touch from-attempt-1
        sleep 300 > /dev/null 2>&1 &
        echo "bg=$!" >> "$GITHUB_OUTPUT"
        if [ "$GITHUB_RUN_ATTEMPT" = 1 ]; then echo ready; sleep 60; fi
        echo finished
    """
    jobs = (
        _job("build", "echo built")
        + _job("stage", script, "    needs: build\n")
        + _job("after", "true", "    needs: stage\n")
    )
    jobs = jobs.replace(
        '      - name: main\n        run: |\n          echo "attempt',
        '      - name: main\n        id: main\n        run: |\n          echo "attempt',
    )
    wf = _workflow(tmp_path, jobs)
    with _executor(tmp_path, repo, wf) as ex:
        first = ex.run(run_id=77, kill=Kill("stage", "main", lambda line: line == "ready"))
        stage = first.jobs["stage"]
        assert stage.status is Status.FAILURE and stage.killed and stage.exit_code == -9
        assert stage.duration < 20 and first.jobs["after"].status is Status.SKIPPED
        second = ex.rerun_failed()
        assert (second.run_id, second.attempt, second.executed) == ("77", 2, ["stage", "after"])
        assert second.jobs["stage"].status is Status.SUCCESS and second.jobs["after"].status is Status.SUCCESS
        assert second.jobs["stage"].step("main").log[0] == "attempt=2 run=77"
        assert second.jobs["build"].attempt == 1  # carried over, not re-run
        with pytest.raises(WorkflowError, match="no failed job"):
            ex.rerun_failed()
        third = ex.rerun_job("build")  # re-runs its dependents too, as GitHub does
        assert (third.attempt, third.executed) == (3, ["build", "stage", "after"])
        assert all(j.status is Status.SUCCESS and j.attempt == 3 for j in third.jobs.values())
    for result in (stage, second.jobs["stage"]):
        _assert_gone(int(result.step("main").outputs["bg"]))


def _assert_gone(pid: int) -> None:
    """The process ``pid`` has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return
    assert state == "Z", f"process {pid} survived its step (state {state})"


def test_a_step_over_its_timeout_is_killed(tmp_path: Path, repo: tuple[Path, str]) -> None:
    with _executor(
        tmp_path, repo, _workflow(tmp_path, _job("a", "echo start; sleep 60")), step_timeout=1
    ) as ex:
        job = ex.run(run_id=3).jobs["a"]
    assert job.status is Status.FAILURE and job.step("main").timed_out and job.duration < 10


def test_two_executors_run_at_once_without_sharing(tmp_path: Path, repo: tuple[Path, str]) -> None:
    wf = _workflow(tmp_path, _job("a", 'echo "$GITHUB_WORKSPACE"; sleep 1'))
    results: dict[str, RunResult] = {}
    roots = []

    def machine(name: str) -> None:
        with _executor(tmp_path, repo, wf) as ex:
            roots.append(ex.root)
            results[name] = ex.run(run_id=name)

    threads = [threading.Thread(target=machine, args=(n,)) for n in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    one, two = results["one"].jobs["a"], results["two"].jobs["a"]
    assert one.status is two.status is Status.SUCCESS
    assert one.started < two.ended and two.started < one.ended  # overlapping
    assert one.step("main").log != two.step("main").log and roots[0] != roots[1]


def test_the_rendered_vintage_workflow_loads_in_stage_order(repo_project: Path, tmp_path: Path) -> None:
    text = render(
        load_spec(repo_project / "vintage.yaml"),
        "github-actions",
        config_path=repo_project / "vintage.yaml",
        cwd=repo_project,
        allow_local_state=True,
    )
    path = tmp_path / "vintage.yml"
    path.write_text(text)
    wf = Workflow.load(path)
    assert wf.order == ("build", "staging", "production")
    assert wf.environment("production") == "production" and wf.needs("production") == ["staging"]
    Executor(wf, repo=tmp_path, commit="HEAD", python=PYTHON, provision={"Install": lambda _: None}).close()


# Stands in for .venv/bin/vintage: records each call with what the job's environment told it; the first
# `stage production` exits 3 (waiting at vintage's approval gate), as the rendered script expects.
VINTAGE_STUB = """\
#!/usr/bin/env bash
echo "$* | actor=$VINTAGE_ACTOR approver=${{VINTAGE_APPROVER:-}} secret=${{{secret}:-}}" >> {calls}
echo "stand-in vintage sees the secret as ${{{secret}:-}}"
if [ "$*" = "stage production --run-id $GITHUB_RUN_ID" ] && ! grep -q '^approve' {calls}; then exit 3; fi
"""


def test_the_rendered_vintage_workflow_runs_with_a_stand_in_vintage(
    repo_project: Path, tmp_path: Path, repo: tuple[Path, str]
) -> None:
    text = render(
        load_spec(repo_project / "vintage.yaml"),
        "github-actions",
        config_path=repo_project / "vintage.yaml",
        cwd=repo_project,
        allow_local_state=True,
    )
    path = tmp_path / "vintage.yml"
    path.write_text(text)
    (secret,) = set(re.findall(r"secrets\.(\w+)", text))
    calls = tmp_path / "calls.txt"

    def install(workspace: Path) -> None:
        stub = workspace / ".venv" / "bin" / "vintage"
        stub.parent.mkdir(parents=True)
        stub.write_text(VINTAGE_STUB.format(secret=secret, calls=calls))
        stub.chmod(0o755)

    value = "pr1mary-api-key"
    with Executor(
        Workflow.load(path),
        repo=repo[0],
        commit=repo[1],
        python=PYTHON,
        work_dir=tmp_path,
        secrets={secret: value},
        reviewers={"production": "alice"},
        provision={"Install": install},
        actor="bob",
    ) as ex:
        result = ex.run(run_id=900)
    assert [result.jobs[j].status for j in result.executed] == [Status.SUCCESS] * 3, result.jobs[
        "production"
    ].log
    assert calls.read_text().splitlines() == [
        "stage build --run-id 900 | actor=bob approver= secret=",
        "stage staging --run-id 900 | actor=bob approver= secret=",
        f"stage production --run-id 900 | actor=bob approver=alice secret={value}",
        "approve 900 production --as alice --comment approved in GitHub environment production, "
        f"workflow run 900 | actor=bob approver=alice secret={value}",
        f"stage production --run-id 900 | actor=bob approver=alice secret={value}",
    ]
    log = result.jobs["production"].log
    assert value not in log and "stand-in vintage sees the secret as ***" in log
