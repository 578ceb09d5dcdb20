"""Shared test fixtures.

``../shared`` (next to the repository) holds the real weights, data and reference fixtures. CI has it; a user's
checkout usually does not, so tests that need it skip with a clear reason. Override the location with
``HRINV_SHARED=/path/to/shared``.
"""

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HRINV_SHARED", REPO.parent / "shared")).resolve()
DATA = REPO / "tests" / "data"  # the small reference fixtures committed with the tests (see tests/data/README.md)


def shared_path(*parts):
    """Path inside ../shared, or skip the calling test with a reason that says what is missing."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs {p} (the team's ../shared folder with real weights/data/fixtures; "
                    f"set HRINV_SHARED to point at it)")
    return p


def fixture_path(*parts):
    """A reference fixture: the repository's copy in ``tests/data/`` when it has one, else ``../shared/fixtures``;
    skips the calling test (saying what is missing) when neither has it."""
    p = DATA.joinpath(*parts)
    if p.exists():
        return p
    p = SHARED.joinpath("fixtures", *parts)
    if not p.exists():
        pytest.skip(f"needs the fixture {'/'.join(parts)}, kept in {SHARED / 'fixtures'} and not in tests/data/ "
                    f"(large, or paired with real weights; set HRINV_SHARED to point at the team's ../shared folder)")
    return p


def extra_fixtures(*names):
    """Those of ``names`` (fixture folders or ``folder/file``) that ``../shared/fixtures`` (or ``tests/data/``) has.

    The committed fixtures in ``tests/data/`` carry each parity and safe-loading proof on a fresh clone; the larger
    ones kept in ``../shared`` (``nv_small``, ``ros_small``, the protocol-2 ``nv_tiny/network.pkl``) repeat the same
    checks on other shapes. Tests add them to their parameters through this function, so they run where ``../shared``
    is present and are simply not collected elsewhere (they would only add skips that hide nothing)."""
    return [n for n in names if DATA.joinpath(n).exists() or SHARED.joinpath("fixtures", n).exists()]


@pytest.fixture
def shared():
    """The ../shared folder (skips when absent)."""
    return shared_path()


@pytest.fixture
def fixtures_dir():
    return shared_path("fixtures")


@pytest.fixture
def device():
    """Test device: ``HRINV_TEST_DEVICE`` (default cpu)."""
    return torch.device(os.environ.get("HRINV_TEST_DEVICE", "cpu"))


@pytest.fixture
def rng():
    """A local, seeded generator (tests never seed the global RNG)."""
    return torch.Generator().manual_seed(0)


NV_INIT_KEYS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs")


def fixture_generator(name, *, synthesis_overrides=None, transform=None):
    """The NVIDIA reference generator of ``../shared/fixtures/<name>`` (config.json + state_dict.safetensors), built
    with our Generator and loaded strictly. ``transform(state_dict) -> state_dict`` may edit the weights first.
    Returns ``(G, cfg)``; skips when ../shared is absent."""
    import json

    from safetensors.torch import load_file

    from hrinv.generator.stylegan2 import Generator

    folder = fixture_path(name)
    cfg = json.loads((folder / "config.json").read_text())
    kwargs = {k: cfg[k] for k in NV_INIT_KEYS}
    kwargs["synthesis_kwargs"] = {**kwargs["synthesis_kwargs"], **(synthesis_overrides or {})}
    G = Generator(**kwargs)
    sd = load_file(str(folder / "state_dict.safetensors"))
    G.load_state_dict(transform(sd) if transform else sd, strict=True)
    return G.eval(), cfg


# ----------------------------------------------------------------------------------------------------------------
# Seeded random networks: the real architectures without learned weights (nothing downloaded). Tests that need a
# VGG-shaped network or a generator, but not what they learned, use these.

TINY_KWARGS = dict(z_dim=32, c_dim=0, w_dim=32, img_resolution=64, img_channels=3,
                   mapping_kwargs={"num_layers": 2}, synthesis_kwargs={"channel_base": 1024, "channel_max": 32})


def tiny_generators(seed: int = 0):
    """(G_s, G_t): a random 64 px StyleGAN2 and a 'fine-tuned' copy of it (weights nudged by a few percent)."""
    from hrinv.generator.stylegan2 import Generator

    g = torch.Generator().manual_seed(seed)
    G_s = Generator(**TINY_KWARGS)
    with torch.no_grad():
        for p in G_s.parameters():                     # NVIDIA init is N(0, 1) for every weight and the const;
            if p.ndim >= 2:                            # re-draw them from the local generator (biases are constants)
                p.copy_(torch.randn(p.shape, generator=g))
        for name, b in G_s.named_buffers():
            if name.endswith("noise_const"):
                b.copy_(torch.randn(b.shape, generator=g))
    G_t = Generator(**TINY_KWARGS)
    G_t.load_state_dict(G_s.state_dict())
    with torch.no_grad():
        for p in G_t.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05 * (p.std() if p.numel() > 1 else 0.0))
    return G_s, G_t


def random_vgg(seed: int = 0, *, convention="torchvision", calibrated: bool = False):
    """A VGG16 conv trunk with random (He-style) weights: the real architecture, usable as a perceptual loss.
    ``calibrated=True`` attaches per-tap scales measured on smooth random pictures (as the real caffe weights carry
    theirs), so code paths that use ``vgg.calibration`` run too."""
    from hrinv.losses.vgg import VGG16Conv

    g = torch.Generator().manual_seed(seed)
    vgg = VGG16Conv(convention)
    with torch.no_grad():
        for m in vgg.features.values():
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            m.bias.zero_()
    vgg = vgg.eval().requires_grad_(False)
    if calibrated:
        from hrinv.losses import measure_calibration

        low = torch.rand(4, 3, 6, 6, generator=g) * 2 - 1
        pics = torch.nn.functional.interpolate(low, size=(64, 64), mode="bilinear", align_corners=False)
        with torch.no_grad():
            vgg.calibration = measure_calibration(vgg, [pics], ops=(2, 3, 7, 8, 14, 15, 21, 22, 28, 29))
    return vgg


def save_random_vgg_file(path, seed: int = 0, *, convention="caffe"):
    """Write a random VGG16 as a ``features.N.*`` safetensors file whose metadata names its input convention, the
    layout of the caffe-convention file users load. Returns the state dict."""
    from safetensors.torch import save_file

    sd = {f"features.{k}": v.contiguous() for k, v in random_vgg(seed).features.state_dict().items()}
    save_file(sd, str(path), metadata={"input_convention": convention})
    return sd


@pytest.fixture(scope="session")
def vgg_random():
    """A seeded random VGG16 (caffe convention, calibrated): for tests that need the architecture, not the weights."""
    return random_vgg(0, convention="caffe", calibrated=True)


@pytest.fixture(scope="session")
def two_face_photo(tmp_path_factory):
    """A photo with two real faces, named ``couple.jpg``: the team's id-photo from ``../shared`` when present, else a
    composite made from the head of the package's public-domain demo portrait (``hrinv/bundled/demo_photo.png``) and a
    smaller mirrored copy of it, on a grey 1140x794 canvas. Detection, alignment and paste-back plumbing tests use it; tests of
    landmark accuracy or identity use the real photos only."""
    real = SHARED / "data" / "faces" / "id-photos" / "couple.jpg"
    if real.is_file():
        return real
    from PIL import Image, ImageOps

    with Image.open(REPO / "hrinv" / "bundled" / "demo_photo.png") as im:
        head = im.convert("RGB").crop((94, 0, 354, 260))  # the 512 px portrait's head and shoulders
    canvas = Image.new("RGB", (1140, 794), (128, 128, 128))
    canvas.paste(head.resize((560, 560)), (30, 120))
    canvas.paste(ImageOps.mirror(head).resize((440, 440)), (650, 200))
    path = tmp_path_factory.mktemp("photos") / "couple.jpg"
    canvas.save(path, quality=95)
    return path


@pytest.fixture(scope="session")
def dlib_random_dat(tmp_path_factory):
    """dlib's face network in its ``.dat`` format with seeded random weights, under the real file's name (see
    ``tests/dlib_dat.py``): for tests of the format, the architecture and the plumbing, not of learned identity."""
    from dlib_dat import write_random_dlib_dat

    return write_random_dlib_dat(tmp_path_factory.mktemp("dlib") / "dlib_face_recognition_resnet_model_v1.dat")


@pytest.fixture(scope="session")
def tiny_gens():
    """``(G_s, G_t)`` from :func:`tiny_generators` (seed 0); do not modify them in a test."""
    return tiny_generators(0)


@pytest.fixture(scope="module")
def one_cpu_thread():
    """One CPU thread for a test module (``pytestmark = pytest.mark.usefixtures("one_cpu_thread")``): the same float
    reductions as each torchrun rank, and tiny convolutions run faster than with oversubscribed threads."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# Figures a test wants shown in every run's summary (CI keeps the terminal output, not captured prints): tests
# call ``report_figure("...")`` and the lines are printed after the results.
_FIGURES: list[str] = []


def report_figure(line: str) -> None:
    _FIGURES.append(str(line))


def pytest_terminal_summary(terminalreporter):
    if _FIGURES:
        terminalreporter.section("figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)
