"""The committed reference fixtures (tests/data/): intact, listed in SHA256SUMS, and free of reference source code."""

import hashlib

import pytest
from conftest import DATA, SHARED

from hrinv.io.nvidia_pkl import embedded_sources
from hrinv.io.safe_unpickle import safe_load_pickle

PLACEHOLDER = "# source omitted from fixture"


def _sums(path):
    out = {}
    for line in path.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        out[name.removeprefix("./")] = digest
    return out


def _data_files():
    """Every committed fixture file: all of tests/data/ except the notes (README.md) and SHA256SUMS itself."""
    return sorted(p.relative_to(DATA).as_posix() for p in DATA.rglob("*")
                  if p.is_file() and p.name not in ("README.md", "SHA256SUMS"))


def test_sha256sums_list_every_fixture_file_and_match():
    """Every committed fixture is listed and intact. Those that ../shared/fixtures also has (when present) are
    byte-for-byte copies of the team's files; the others exist only here."""
    sums = _sums(DATA / "SHA256SUMS")
    assert sorted(sums) == _data_files(), "tests/data/SHA256SUMS and the files in tests/data/ differ"
    for name, digest in sums.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, f"{name} changed"
    theirs = SHARED / "fixtures" / "SHA256SUMS"
    if theirs.is_file():
        published = _sums(theirs)
        both = sorted(set(sums) & set(published))
        assert both and {n: sums[n] for n in both} == {n: published[n] for n in both}


@pytest.mark.parametrize("marker", [b"def modulated_conv2d", b"class Generator(", b"class StyledConv", b"def forward",
                                    b"import torch", b"persistent_class", b"Copyright", b"NVIDIA"])
def test_no_reference_source_text_in_any_fixture_file(marker):
    hits = [name for name in _data_files() if marker in (DATA / name).read_bytes()]
    assert hits == [], f"{marker!r} found in {hits}"


@pytest.mark.parametrize("name", [n for n in _data_files() if n.endswith(".pkl") and not n.startswith("malicious/")])
def test_snapshot_pickles_embed_only_the_placeholder_source(name):
    """Every persistent record in the committed NVIDIA snapshots carries the placeholder, never the module source."""
    snapshot = safe_load_pickle((DATA / name).read_bytes())
    assert set(snapshot) >= {"G", "D", "G_ema"}, sorted(snapshot)
    assert list(embedded_sources(snapshot)) == [PLACEHOLDER]
