"""One settings object (core/settings.py): every BACKDROP_* variable has a type, a default and a
docs/configuration.md row; no other module reads them from os.environ; a bad value is one line naming it, in the
CLI and in the app; a changed variable is seen at once (tests set them per test)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from core import config
from core.errors import InvalidOptionError
from core.settings import README, Settings, env_name, load, markdown_table, readme_table, settings

ROOT = Path(__file__).resolve().parents[2]
CODE = [*sorted((ROOT / "core").rglob("*.py")), *sorted((ROOT / "ui").rglob("*.py")),
        *sorted((ROOT / "pages").rglob("*.py")), ROOT / "streamlit_app.py"]
SETTINGS_PY = ROOT / "core" / "settings.py"
NAMES = {env_name(field) for field in Settings.model_fields}
ENV_READ = re.compile(r"\bos\.(environ|getenv)\b|\bgetenv\(")


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_the_readme_table_is_the_one_generated_from_the_settings():
    text = README.read_text(encoding="utf-8")
    assert readme_table(text) == markdown_table(), \
        "docs/configuration.md's table is out of date: run python -m core.settings --readme"
    for field, info in Settings.model_fields.items():
        assert info.description and "|" not in info.description, env_name(field)


def test_every_backdrop_variable_the_code_names_is_a_documented_setting():
    named = {}
    for path in CODE:
        for name in re.findall(r"\bBACKDROP_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8")):
            named.setdefault(name, _rel(path))
    unknown = {name: where for name, where in named.items() if name not in NAMES}
    assert not unknown, f"add these to core/settings.py (type, default, description): {unknown}"


def test_no_module_but_core_settings_reads_a_backdrop_variable_from_the_environment():
    """A read of os.environ / os.getenv naming a BACKDROP_* variable, directly or through a
    module-level constant ("ENV = 'BACKDROP_DEVICE'"). Not reads: core/service/config.py copies
    the whole environment to forward it to the service's replicas (apply_env sets it there)."""
    reads = []
    for path in CODE:
        if path == SETTINGS_PY:
            continue
        text = path.read_text(encoding="utf-8")
        constants = re.findall(r"^([A-Z_][A-Z0-9_]*)\s*=\s*[\"']BACKDROP_", text, re.M)
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if ENV_READ.search(code) and ("BACKDROP_" in code or
                                          any(re.search(rf"\b{c}\b", code) for c in constants)):
                reads.append(f"{_rel(path)}:{number}: {line.strip()}")
    assert not reads, "read these through core.settings.settings():\n" + "\n".join(reads)


def test_settings_are_read_once_and_again_when_a_variable_changes(monkeypatch, tmp_path):
    first = settings()
    assert settings() is first                                  # nothing changed: the same object
    monkeypatch.setenv("BACKDROP_DATA_DIR", str(tmp_path / "elsewhere"))
    assert config.data_dir() == (tmp_path / "elsewhere").resolve()
    assert settings() is not first
    monkeypatch.setenv("BACKDROP_DATA_DIR", "  ")               # blank = unset: the default
    assert config.data_dir() == Path("data").resolve()
    monkeypatch.setenv("BACKDROP_SWEEP_GRACE_S", "0")
    assert settings().sweep_grace_s == 0.0


@pytest.mark.parametrize("name, value, says", [
    ("BACKDROP_SWEEP_GRACE_S", "1h", "BACKDROP_SWEEP_GRACE_S must be a number, got '1h'"),
    ("BACKDROP_S3_TIMEOUT_S", "-5", "BACKDROP_S3_TIMEOUT_S must be more than 0, got '-5'"),
    ("BACKDROP_S3_ADDRESSING_STYLE", "sideways", "BACKDROP_S3_ADDRESSING_STYLE must be one of"),
    ("BACKDROP_COMPILE", "please", "BACKDROP_COMPILE must be 1 or 0"),
])
def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch, name, value, says):
    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidOptionError) as e:
        settings()
    assert str(e.value).startswith(says) and "\n" not in str(e.value)


def test_a_given_environment_is_read_alone(monkeypatch):
    """The service builds its settings from the environment it is handed (its replicas take it)."""
    from core.service.config import ServiceConfig
    monkeypatch.setenv("BACKDROP_SERVE_NUM_CPUS", "3")
    assert ServiceConfig.from_env().num_cpus == 3
    assert ServiceConfig.from_env({"BACKDROP_SERVE_NUM_CPUS": "2"}).num_cpus == 2
    assert ServiceConfig.from_env({}).num_cpus == 1
    assert load({"BACKDROP_DATA_DIR": ""}).data_dir == Path("data")
    with pytest.raises(InvalidOptionError, match="BACKDROP_SERVE_NUM_CPUS must be a number, got 'x'"):
        ServiceConfig.from_env({"BACKDROP_SERVE_NUM_CPUS": "x"})


def test_the_app_says_a_bad_setting_in_one_line(monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("BACKDROP_SWEEP_GRACE_S", "1h")
    # the router, and each page on its own URL (a bookmark or a reload runs it without the router)
    for script in ("streamlit_app.py", "pages/editor.py", "pages/history.py", "pages/models.py"):
        at = AppTest.from_file(str(ROOT / script), default_timeout=60).run()
        assert not at.exception, (script, [e.value for e in at.exception])
        assert [e.value for e in at.error] == [
            "Backdrop cannot start: BACKDROP\\_SWEEP\\_GRACE\\_S must be a number, got '1h'. "
            "Correct it and restart the app (docs/configuration.md)."], script
