"""The documentation is tested: every module's doctests run, every public name of the
user-facing modules carries an example, and README's command line reference is current."""
import doctest
import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

import pytest

import fastnet

ROOT = Path(__file__).resolve().parents[1]
#: Modules whose examples need an optional extra (the dev extra installs both).
NEEDS = {"fastnet.plot": "matplotlib", "fastnet.images": "PIL", "fastnet.sklearn": "sklearn"}
#: The user-facing modules of issue 8: every public name documented with a runnable example.
EXAMPLES_REQUIRED = ["fastnet", "fastnet.progress", "fastnet.plot", "fastnet.images"]


def _modules():
    names = ["fastnet"]
    for info in pkgutil.iter_modules(fastnet.__path__):
        if info.name in ("kernels", "_sample", "__main__"):  # kernels: their own tests, some need CUDA
            continue
        names.append(f"fastnet.{info.name}")
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_doctests(name, tmp_path, monkeypatch):
    if name in NEEDS:
        pytest.importorskip(NEEDS[name], reason=f"{name}'s examples need {NEEDS[name]} (dev extra)")
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             raise_on_error=False, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctests failed in {name} (output above)"


@pytest.mark.parametrize("name", EXAMPLES_REQUIRED)
def test_public_names_have_examples(name):
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    module = importlib.import_module(name)
    missing = []
    for attr in module.__all__:
        obj = getattr(module, attr)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue  # constants are documented by their #: comments
        doc = inspect.getdoc(obj) or ""
        if ">>>" not in doc:
            missing.append(attr)
        if inspect.isclass(obj) and name == "fastnet":  # the core API: every public method too
            for meth, fn in vars(obj).items():
                if not meth.startswith("_") and inspect.isfunction(fn) and ">>>" not in (inspect.getdoc(fn) or ""):
                    missing.append(f"{attr}.{meth}")
    assert not missing, f"{name}: public names without a doctest example: {missing}"


def _gen():
    spec = importlib.util.spec_from_file_location("gen_cli_reference", ROOT / "tools" / "gen_cli_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_cli_reference_is_current():
    gen = _gen()
    text = (ROOT / "README.md").read_text()
    block = gen.current_block(text)
    fresh = gen.render().strip("\n")
    if block != fresh:
        recorded = gen.recorded_python(text)
        if recorded and recorded != gen.python_version():
            pytest.skip(f"README's reference was generated with Python {recorded}, this is "
                        f"{gen.python_version()}: argparse lays help out differently")
        pytest.fail("README.md's command line reference is stale: run python tools/gen_cli_reference.py")
    for name in ("train", "evaluate", "predict", "plot", "show", "info"):
        assert f"### `fastnet {name} --help`" in block


def test_readme_cli_reference_check_mode_detects_a_stale_readme(tmp_path, monkeypatch):
    gen = _gen()
    stale = (ROOT / "README.md").read_text().replace("print the K most likely", "print the N most likely")
    assert stale != (ROOT / "README.md").read_text()
    (tmp_path / "README.md").write_text(stale)
    monkeypatch.setattr(gen, "README", tmp_path / "README.md")
    assert gen.main(["--check"]) == 1
    assert gen.main([]) == 0 and gen.main(["--check"]) == 0
    assert (tmp_path / "README.md").read_text() == (ROOT / "README.md").read_text()


def test_help_texts_do_not_depend_on_the_terminal(monkeypatch):
    from fastnet.cli import help_texts

    monkeypatch.setenv("COLUMNS", "40")
    narrow_env = help_texts()
    monkeypatch.setenv("COLUMNS", "200")
    assert help_texts() == narrow_env
    assert all(len(line) <= 92 for t in narrow_env.values() for line in t.splitlines())
    assert sys.modules["fastnet.cli"] is not None
