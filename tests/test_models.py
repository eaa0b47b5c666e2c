"""Configs, checkpoints and the contract wrapper."""
import pytest
import torch

from mdpot.models import AllegroConfig, NequIP, NequIPConfig, Potential, build_model, create_checkpoint, load_checkpoint, make_config
from mdpot.testing import alloy, small_model
from mdpot.data import TypeMapper, atoms_to_graph


@pytest.mark.parametrize("options,error,match", [
    (dict(elements=()), ValueError, "elements must be a non-empty list"),
    (dict(elements=("Cu", "Cu")), ValueError, r"elements must be unique, got \['Cu', 'Cu'\]"),
    (dict(elements=("Qq",)), ValueError, "unknown chemical symbol 'Qq'"),
    (dict(elements=("Cu",), r_max=0.0), ValueError, "r_max must be a finite positive number, got 0.0"),
    (dict(elements=("Cu",), r_max="5"), TypeError, "r_max must be a number, got '5'"),
    (dict(elements=("Cu",), l_max=1.5), TypeError, "l_max must be an int"),
    (dict(elements=("Cu",), num_layers=0), ValueError, "num_layers must be >= 1, got 0"),
    (dict(elements=("Cu",), parity="yes"), TypeError, "parity must be true or false"),
    (dict(elements=("Cu", "Au"), per_element_energy_shift=(1.0,)), ValueError, "per_element_energy_shift needs one value per element"),
    (dict(elements=("Cu",), two_body_mlp=(0,)), ValueError, "two_body_mlp must be a sequence of positive ints"),
])
def test_config_validation(options, error, match):
    with pytest.raises(error, match=match):
        AllegroConfig(**options)


@pytest.mark.parametrize("options,error,match", [
    (dict(elements=("Cu",), num_features=0), ValueError, "num_features must be >= 1, got 0"),
    (dict(elements=("Cu",), radial_mlp=(8, -1)), ValueError, "radial_mlp must be a sequence of positive ints"),
    (dict(elements=("Cu",), num_layers=True), TypeError, "num_layers must be an int"),
])
def test_nequip_config_validation(options, error, match):
    with pytest.raises(error, match=match):
        NequIPConfig(**options)


def test_receptive_field_property():
    assert NequIPConfig(elements=("Cu",), r_max=4.0, num_layers=3).receptive_field == 12.0
    assert AllegroConfig(elements=("Cu",), r_max=4.0, num_layers=3).receptive_field == 4.0
    with pytest.raises(TypeError, match="NequIP needs a NequIPConfig"):
        NequIP(AllegroConfig(elements=("Cu",)))


def test_config_dict_round_trip():
    cfg = make_config("allegro", {"elements": ["Cu", "Au"], "r_max": 4.5, "latent_mlp": [32, 32]})
    assert cfg.latent_mlp == (32, 32) and cfg.per_element_energy_shift == (0.0, 0.0)
    assert make_config("allegro", cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown architecture 'mace'"):
        make_config("mace", {"elements": ["Cu"]})


def test_seeded_build_is_deterministic():
    a, b, c = (build_model(AllegroConfig(elements=("Cu",)), seed=s) for s in (1, 1, 2))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_checkpoint_round_trip(tmp_path):
    model = small_model("allegro")
    path = tmp_path / "m.ckpt"
    from mdpot.models import save_checkpoint

    save_checkpoint(model, path, extra={"note": "x"})
    again, payload = load_checkpoint(path)
    assert payload["extra"] == {"note": "x"} and again.config == model.config
    g = atoms_to_graph(alloy(("Cu", "Au")), model.config.r_max, TypeMapper(("Cu", "Au")))
    args = (g.pos, g.atom_type, g.edge_index, g.edge_shift, g.num_atoms, False)
    assert torch.equal(Potential(model)(*args)[0], Potential(again)(*args)[0])
    create_checkpoint(model.config, tmp_path / "fresh.ckpt", seed=4)
    assert load_checkpoint(tmp_path / "fresh.ckpt")[1]["extra"]["provenance"] == {"kind": "fresh", "seed": 4}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_load_checkpoint_leaves_the_global_rng_alone(tmp_path, dtype):
    """Loading rebuilds the module without drawing from the caller's random stream, and casts once."""
    model = small_model("nequip")
    path = tmp_path / "m.ckpt"
    from mdpot.models import save_checkpoint

    save_checkpoint(model, path)
    torch.manual_seed(1234)
    state = torch.random.get_rng_state()
    again, _ = load_checkpoint(path, dtype=dtype)
    assert torch.equal(torch.random.get_rng_state(), state), "load_checkpoint moved the global RNG"
    for key, value in model.state_dict().items():
        loaded = again.state_dict()[key]
        assert loaded.dtype == (dtype if value.is_floating_point() else value.dtype), key
        assert torch.equal(loaded, value.to(loaded.dtype)), key


def test_bad_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found: /"):
        load_checkpoint(tmp_path / "none.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"not an mdpot checkpoint \(not a zip archive written by torch.save"):
        load_checkpoint(bad)
    torch.save({"weights": 1}, bad)
    with pytest.raises(ValueError, match="not an mdpot checkpoint"):
        load_checkpoint(bad)


def test_no_edges_gives_shift_only():
    model = small_model("allegro")
    pos = torch.zeros((2, 3), dtype=torch.float64)
    pos[1, 0] = 10.0
    e, f, w, aw = Potential(model)(pos, torch.tensor([0, 1]), torch.zeros((2, 0), dtype=torch.long),
                                   torch.zeros((0, 3), dtype=torch.float64), 2, True)
    assert e.tolist() == list(model.config.per_element_energy_shift)
    assert (f == 0).all() and (w == 0).all() and aw.shape == (2, 3, 3)
