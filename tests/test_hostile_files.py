"""Hostile and damaged files through every loader (issue 11): no denial of service, no crash, no poisoned process.

Every file is generated here (tests/hostile_files.py); nothing hostile is committed. For each one:

* the loader raises an ``hrinv.errors`` type (never a raw ``RuntimeError``/``KeyError``/``MemoryError``/...);
* an allocation bomb is refused in under 1 s and 300 MB (resident-set high-water mark; tracemalloc in the slow run);
* a benign load in the same process still works afterwards (no stand-in was mutated);
* the marker file a payload would create never appears.

The truncation sweep cuts every small fixture (generated ones, the committed tests/data ones, plus ../shared/fixtures
when present) at 10 offsets.
The heavy random-mutation fuzz is ``@pytest.mark.slow`` (``pytest -m slow tests/test_hostile_files.py -s``).
"""

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import hostile_files as H
from conftest import DATA, SHARED
from hrinv.errors import HRInvError

LIMIT_S = 1.0
LIMIT_BYTES = 300 * 2 ** 20


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    (d / "valid").mkdir()
    valid = H.valid_files(d / "valid")
    for case in valid:  # warm-up: first-use imports are not the loaders' cost
        H.load(case)
    marker = d / "PWNED"
    return {"valid": valid, "hostile": H.hostile_cases(d, marker), "marker": marker}


def _benign_loads_still_work(valid):
    for case in valid:
        out = H.load(case)
        if case.path.name == "benign.pkl":
            H.check_benign(out)


def test_every_hostile_file_is_refused_fast_small_typed_and_leaves_the_process_healthy(files):
    report = []
    for case in files["hostile"]:
        err, dt, mem = H.measure(lambda: H.load(case))
        report.append((case, err, dt, mem))
        if case.what.startswith("module_src"):  # loads (we never run the source); a warning names the risk
            assert err is None, (case.what, err)
        else:
            assert isinstance(err, HRInvError), f"{case.what}: {type(err).__name__}: {err}"
            assert str(err).strip() and len(str(err)) > 40, f"{case.what}: message too short: {err}"
        if case.bomb:
            assert dt < LIMIT_S, f"{case.what}: {dt:.2f} s to refuse"
            assert mem < LIMIT_BYTES, f"{case.what}: {mem / 2**20:.0f} MiB to refuse"
        assert not files["marker"].exists(), f"{case.what}: a payload ran"
    _benign_loads_still_work(files["valid"])
    worst_t = max(r[2] for r in report)
    worst_m = max(r[3] for r in report)
    print(f"\n{len(report)} hostile files, {sum(r[1] is not None for r in report)} refused, "
          f"{sum(isinstance(r[1], HRInvError) for r in report)} typed; worst {worst_t * 1000:.0f} ms, "
          f"{worst_m / 2**20:.1f} MiB")


def test_build_on_any_global_never_poisons_later_loads(files):
    """BUILD on an allow-listed function/class used to set e.g. ``_rebuild_tensor.__defaults__ = ()``: the file
    loaded 'fine' and every later load failed. Now a fresh wrapper per load takes (and refuses) it."""
    from hrinv.io import safe_unpickle as su
    before = {k: (getattr(v, "__defaults__", None), dict(getattr(v, "__dict__", {})) if callable(v) and
                  not isinstance(v, type) else None) for k, v in su._ALLOWED.items()}
    builds = [c for c in files["hostile"] if c.path.name.startswith("build_")]
    assert len(builds) >= 3 * 20
    for case in builds:
        with pytest.raises(HRInvError):
            H.load(case)
        _benign_loads_still_work(files["valid"][-1:])  # the pickle with every stand-in
    after = {k: (getattr(v, "__defaults__", None), dict(getattr(v, "__dict__", {})) if callable(v) and
                 not isinstance(v, type) else None) for k, v in su._ALLOWED.items()}
    assert before == after
    assert not any(hasattr(cls, "poisoned") for cls in su._ALLOWED.values() if isinstance(cls, type))
    _benign_loads_still_work(files["valid"])


def test_ext_opcodes_are_refused_even_when_the_process_registered_an_extension(tmp_path):
    import copyreg

    from hrinv.errors import UnsafeCheckpointError
    from hrinv.io.safe_unpickle import safe_load_pickle
    marker = tmp_path / "ran"
    copyreg.add_extension("os", "system", 0x7ff0_0000 + 1)
    try:
        data = b"\x80\x02\x84" + (0x7ff0_0000 + 1).to_bytes(4, "little") + b"X" + len(f"touch {marker}").to_bytes(
            4, "little") + f"touch {marker}".encode() + b"\x85R."
        with pytest.raises(UnsafeCheckpointError, match="EXT4"):
            safe_load_pickle(data)
    finally:
        copyreg.remove_extension("os", "system", 0x7ff0_0000 + 1)
    assert not marker.exists()


def test_pickled_noise_object_array_crash_is_a_typed_error_in_a_child_process(files):
    """The file that made numpy read past its buffer (SIGSEGV): run in a child so a crash cannot hide."""
    case = next(c for c in files["hostile"] if c.path.name == "latent_segv_wn.npz")
    code = textwrap.dedent(f"""
        from hrinv.errors import HRInvError
        from hrinv.latent import Latent
        try:
            Latent.load({str(case.path)!r}, allow_pickled_noise=True)
        except HRInvError as e:
            print("TYPED", type(e).__name__)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0 and "TYPED" in out.stdout, (out.returncode, out.stderr[-500:])


def _truncation_cases(valid):
    """The generated files, the committed reference fixtures, and those only ../shared/fixtures has (when present)."""
    cases = list(valid) + H.shared_fixture_cases(DATA)
    if SHARED.joinpath("fixtures").is_dir():
        committed = {c.what for c in cases}
        cases += [c for c in H.shared_fixture_cases(SHARED / "fixtures") if c.what not in committed]
    return cases


def test_truncation_sweep_every_fixture_at_ten_offsets(files, tmp_path):
    """Every fixture cut at 10 offsets (empty, header bytes, then spread to the last byte) gives a typed error."""
    tried = 0
    for case in _truncation_cases(files["valid"]):
        data = case.path.read_bytes()
        for cut in H.truncation_offsets(len(data)):
            p = tmp_path / f"cut_{cut}{case.path.suffix}"
            p.write_bytes(data[:cut])
            sub = H.Case(p, case.loader, f"{case.what} cut at {cut}/{len(data)}")
            err, dt, mem = H.measure(lambda: H.load(sub))
            tried += 1
            if err is None and case.loader == "image":  # cut inside the trailing IEND/EOI marker: no pixel lost
                assert torch.equal(H.load(sub), H.load(case)), sub.what
                continue
            assert isinstance(err, HRInvError), f"{sub.what}: {type(err).__name__}: {err}"
            assert dt < 10 and mem < LIMIT_BYTES, (sub.what, dt, mem)
            p.unlink()
    _benign_loads_still_work(files["valid"])
    assert tried >= 70


def test_generator_bombs_fail_before_building(files, monkeypatch):
    """The declared config is checked against the tensors before the Generator exists; nothing is built at all."""
    import hrinv.generator.stylegan2 as sg
    built = []
    real = sg.Generator.__init__

    def spy(self, *a, **k):
        built.append(k.get("device"))
        return real(self, *a, **k)

    monkeypatch.setattr(sg.Generator, "__init__", spy)
    for case in files["hostile"]:
        if case.loader == "generator" and any(t in case.path.name for t in ("zw20000", "layers1e7", "res2e30")):
            with pytest.raises(HRInvError):
                H.load(case)
    assert built == []
    G = H.load(files["valid"][0])  # a valid file is built on the meta device, then gets the file's tensors
    assert built == ["meta"] and not any(p.is_meta for p in G.parameters())


# ----------------------------------------------------------------------------------------------------------------------
# Heavy: random mutations of every valid file, in a child process (a crash or hang cannot hide)

FUZZ_CHILD = r"""
import json, random, signal, sys, time
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
import hostile_files as H
from hrinv.errors import HRInvError
from pathlib import Path
d, n_per, seed = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
(d / "valid").mkdir()
valid = H.valid_files(d / "valid")
extra = [H.Case(Path(p), l, p) for p, l in json.loads(sys.argv[5])]
for c in valid: H.load(c)
rng = random.Random(seed)
stats = {"tried": 0, "loaded": 0, "refused": 0, "typed": 0, "untyped": [], "worst_s": 0.0, "worst_bytes": 0,
         "worst_file": "", "hangs": 0}
def alarm(*a): raise TimeoutError("hang")
signal.signal(signal.SIGALRM, alarm)
for case in valid + extra:
    data = case.path.read_bytes()
    for i in range(n_per):
        b = bytearray(data)
        kind = rng.randrange(4)
        for _ in range(rng.choice((1, 2, 8, 64))):
            if not b: break
            j = rng.randrange(len(b))
            if kind == 0: b[j] = rng.randrange(256)
            elif kind == 1: b[j:j + 4] = rng.randbytes(4)
            elif kind == 2: del b[j:j + rng.randrange(1, 64)]
            else: b[j:j] = rng.randbytes(rng.randrange(1, 16))
        p = d / f"m{i}{case.path.suffix}"
        p.write_bytes(bytes(b))
        sub = H.Case(p, case.loader, f"{case.what} mutation {i}")
        signal.alarm(20)
        err, dt, mem = H.measure(lambda: H.load(sub), trace=True)
        signal.alarm(0)
        stats["tried"] += 1
        if isinstance(err, TimeoutError): stats["hangs"] += 1
        if err is None: stats["loaded"] += 1
        else:
            stats["refused"] += 1
            if isinstance(err, HRInvError): stats["typed"] += 1
            else: stats["untyped"].append(f"{sub.what}: {type(err).__name__}: {str(err)[:120]}")
        if err is not None and dt > stats["worst_s"]: stats["worst_s"], stats["worst_file"] = dt, sub.what
        if err is not None: stats["worst_bytes"] = max(stats["worst_bytes"], mem)
for c in valid: H.load(c)
print("FUZZ " + json.dumps(stats))
"""


@pytest.mark.slow
def test_random_mutation_fuzz_never_crashes_hangs_or_leaks_an_untyped_error(tmp_path):
    n_per = int(os.environ.get("HRINV_FUZZ_N", "40"))
    extra = [(str(c.path), c.loader) for c in (H.shared_fixture_cases(SHARED / "fixtures")
                                               if SHARED.joinpath("fixtures").is_dir() else [])
             if c.path.stat().st_size < 4_000_000]
    repo = str(Path(__file__).resolve().parents[1])
    seed = os.environ.get("HRINV_FUZZ_SEED", "11")
    out = subprocess.run([sys.executable, "-c", FUZZ_CHILD, repo, str(tmp_path), str(n_per), seed, json.dumps(extra)],
                         capture_output=True, text=True, timeout=3000)
    assert out.returncode == 0, f"the fuzz child died (rc {out.returncode}): {out.stderr[-2000:]}"
    stats = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("FUZZ "))[5:])
    print(f"\nfuzz: {stats['tried']} files tried, {stats['refused']} refused, {stats['typed']} typed, "
          f"{stats['loaded']} loaded (mutation in unused bytes), crashes 0, hangs {stats['hangs']}; worst refusal "
          f"{stats['worst_s'] * 1000:.0f} ms ({stats['worst_file']}), worst memory {stats['worst_bytes'] / 2**20:.1f} "
          f"MiB")
    assert stats["hangs"] == 0
    assert not stats["untyped"], stats["untyped"][:10]
    assert stats["typed"] == stats["refused"]


@pytest.mark.slow
def test_bombs_under_tracemalloc(files):
    """The same bombs with tracemalloc on as well (slower): the traced peak also stays under 300 MB."""
    for case in files["hostile"]:
        if case.bomb:
            err, dt, mem = H.measure(lambda: H.load(case), trace=True)
            assert isinstance(err, HRInvError) and mem < LIMIT_BYTES, (case.what, err, mem)


def test_random_seed_is_local():
    assert random.Random(0).random() == random.Random(0).random()  # the fuzz uses its own RNG, not the global one
    assert torch.initial_seed() is not None
