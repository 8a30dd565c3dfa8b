"""THE golden-parity test: every fixture in the golden folder against the official outputs.

The folder is tests/fixtures/golden, or $MAMBAGEN_GOLDEN_DIR. Fixtures of families
not implemented yet are skipped, by name.
"""
import pytest

from parity import check, discover, golden_dir, load_fixture

FIXTURES = discover()


def test_golden_folder_has_fixtures():
    assert FIXTURES, f"no fixtures (*.json + *.safetensors) found in {golden_dir()}"


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_matches_official_outputs(path):
    fixture = load_fixture(path)
    checks = check(fixture)
    if checks is None:
        pytest.skip(f"{fixture.name}: kind {fixture.kind!r} not implemented yet")
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    assert checks and not failed, f"{fixture.name} ({fixture.kind}) differs from the official outputs:\n" + "\n".join(failed)
