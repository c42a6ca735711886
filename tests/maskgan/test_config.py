import pytest

from maskgan import config
from maskgan.config import ConfigError, recipes


def test_defaults_and_recipes_validate():
    assert config.from_dict({"data": {"uri": "d"}}).model.generator == "fc3"
    assert recipes.debug_cpu().train.num_workers == 2
    assert recipes.h200_x8("s3://b/data", "s3://b/runs").train.use_gpu is True


@pytest.mark.parametrize("data, needle", [
    ({"model": {"generatr": "fc3"}}, "model.generatr: unknown field"),
    ({"model": {"generator": "resnet"}},
     "model.generator: 'resnet' is not allowed (allowed: fc3, fc_deep, conv, cond_fc3, cond_conv)"),
    ({"objective": {"experiment": "exp4"}}, "objective.experiment: 'exp4' is not allowed"),
    ({"train": {"epochs": "3"}}, "train.epochs: expected an integer"),
    ({"train": {"epochs": 0}}, "train.epochs: must be an integer in [1, 100000], got 0"),
    ({"objective": {"g_lr": float("inf")}}, "objective.g_lr: must be a finite number in (0, 10], got inf"),
    ({"objective": {"head_lr": float("nan")}}, "objective.head_lr: must be a finite number in (0, 10], got nan"),
    ({"objective": {"l1_lambda": -float("inf")}},
     "objective.l1_lambda: must be a finite number in [0, 1000], got -inf"),
    ({"objective": {"l1_lambda": -0.1}}, "objective.l1_lambda: must be a finite number in [0, 1000]"),
    ({"objective": {"diversity_weight": 101}}, "objective.diversity_weight: must be a finite number in [0, 100]"),
    ({"objective": {"diversity_weight": float("nan")}}, "objective.diversity_weight: must be a finite number"),
    ({"train": {"min_rows_fraction": 1.5}}, "train.min_rows_fraction: must be a finite number in [0, 1], got 1.5"),
    ({"train": {"resident_gib": float("inf")}}, "train.resident_gib: must be a finite number in [0, 100000]"),
    ({"train": {"seed": -1}}, "train.seed: must be an integer in [0, 4294967295]"),
    ({"projector": {"max_images": 0}}, "projector.max_images: must be an integer in [1, 10000000], got 0"),
    ({}, "data.uri: required"),
    ({"train": {"name": "../x"}}, "train.name"),
    ({"trian": {}}, "trian: unknown field"),
    ({"data": {"uri": ""}}, "data.uri: required"),
    ({"train": {"use_gpu": "yes"}}, "train.use_gpu"),
])
def test_bad_config_names_the_field(data, needle):
    with pytest.raises(ConfigError) as e:
        config.from_dict(data)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_load_names_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("objective:\n  experimnt: exp1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: objective\.experimnt: unknown field"):
        config.load(str(p))
    with pytest.raises(ConfigError, match="cannot read config"):
        config.load(str(tmp_path / "missing.yaml"))


def test_replace_revalidates():
    cfg = recipes.debug_cpu()
    assert cfg.replace(objective={"experiment": "exp3"}).objective.experiment == "exp3"
    with pytest.raises(ConfigError):
        cfg.replace(objective={"experiment": "nope"})


def _numeric_fields():
    import dataclasses
    import typing

    for section in dataclasses.fields(config.RunConfig):
        cls = section.type if isinstance(section.type, type) else typing.get_type_hints(config.RunConfig)[section.name]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if tp in (int, float) or float in typing.get_args(tp):
                yield f"{section.name}.{f.name}", f, tp


def test_every_numeric_field_has_a_range_that_refuses_non_finite_numbers():
    fields = list(_numeric_fields())
    assert len(fields) >= 20  # the walk above found the fields (a broken walk would pass vacuously)
    unranged = [name for name, f, _tp in fields if "range" not in f.metadata]
    assert unranged == []
    for name, f, tp in fields:
        section, key = name.split(".")
        for bad in (float("inf"), float("nan"), -float("inf"), 10**12, -(10**12)):
            value = int(bad) if tp is int and abs(bad) == 10**12 else bad
            with pytest.raises(ConfigError) as e:
                config.from_dict({"data": {"uri": "d"}}).replace(**{section: {key: value}})
            assert str(e.value).startswith(f"{name}: ") and f.metadata["range"] in str(e.value)


def test_defaults_sit_inside_their_ranges():
    cfg = config.from_dict({"data": {"uri": "d"}})
    assert cfg.train.min_rows_fraction == 0.99
    for name, _f, _tp in _numeric_fields():
        section, key = name.split(".")
        value = getattr(getattr(cfg, section), key)
        assert cfg.replace(**{section: {key: value}})  # the default re-validates


@pytest.mark.parametrize("text, needle", [
    ("data:\n  uri: d\ntrain:\n  epochs: 2\n  epochs: 3\n",
     "at line 5, column 3: duplicate key 'epochs' (first given at line 4)"),
    ("data:\n  uri: d\n train: [\n", "is not valid YAML at line 3, column 2"),
    ("data: {uri: d}\nobjective: {g_lr: .inf}\n", "objective.g_lr: must be a finite number in (0, 10], got inf"),
    ("# nothing but a comment\n", "config is empty (data.uri at least is required)"),
    ("train: {epochs: 2}\n", "data.uri: required"),
    ("- data\n", "config: expected a mapping, got list"),
    ("data: {uri: d}\n\x00\n", "is not valid YAML at character 15: unacceptable character #x0000"),
])
def test_yaml_mistakes_are_one_line_with_the_file_and_where(tmp_path, text, needle):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        config.load(str(p))
    assert str(e.value).startswith(f"{p}: ") and needle in str(e.value) and "\n" not in str(e.value)


def test_merge_keys_override_without_counting_as_duplicates(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data: {uri: d}\nobjective: &o {g_lr: 0.5}\nprojector:\n  epochs: 2\n")
    assert config.load(str(p)).objective.g_lr == 0.5
    p.write_text("data: {uri: d}\ntrain:\n  <<: {epochs: 1, seed: 4}\n  epochs: 2\n")
    cfg = config.load(str(p))
    assert (cfg.train.epochs, cfg.train.seed) == (2, 4)


def test_binary_and_json_configs(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(ConfigError, match=r"c\.yaml: config is not UTF-8 text \(byte 0 is 0x80; a binary file\?\)"):
        config.load(str(p))
    j = tmp_path / "c.json"
    j.write_text('{"data": {"uri": "d"},\n "train": {"epochs": 1, "epochs": 2}}')
    with pytest.raises(ConfigError, match=r"c\.json: config has duplicate key 'epochs' \(in the object at line 2\)"):
        config.load(str(j))
    j.write_text('{"data": {"uri": "d"},\n "train": {"epochs": 1,}}')
    with pytest.raises(ConfigError, match=r"c\.json: config is not valid JSON at line 2, column 24"):
        config.load(str(j))
    j.write_text('{"data": {"uri": "d"}, "objective": {"g_lr": Infinity}}')
    with pytest.raises(ConfigError, match=r"objective\.g_lr: must be a finite number in \(0, 10\], got inf"):
        config.load(str(j))
    j.write_text('{"data": {"uri": "d"}, "train": {"epochs": 2}}')
    assert config.load(str(j)).train.epochs == 2


def test_read_yaml_names_what_the_file_is(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("grid: {a: [1]}\ngrid: {}\n")
    with pytest.raises(ConfigError, match=r"s\.yaml: search space is not valid YAML at line 2, column 1: duplicate"):
        config.read_yaml(str(p), "search space")
    p.write_text("")
    assert config.read_yaml(str(p), "search space") is None
    with pytest.raises(ConfigError, match="cannot read search space"):
        config.read_yaml(str(tmp_path / "missing.yaml"), "search space")


@pytest.mark.parametrize("train, needle", [
    ({"num_workers": 2, "min_workers": 3}, "train.min_workers: 3 is more than train.num_workers 2"),
    ({"worker_resource": "CPU"}, "train.worker_resource: 'CPU' must be a custom resource name"),
    ({"worker_resource": " gpu_node"}, "train.worker_resource: ' gpu_node' must be a custom resource name"),
    ({"placement": "spread"}, "train.placement: 'spread' is not allowed (allowed: PACK, SPREAD, STRICT_SPREAD)"),
])
def test_worker_placement_fields_are_checked(train, needle):
    with pytest.raises(ConfigError) as e:
        config.from_dict({"data": {"uri": "d"}, "train": train})
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_scaling_config_is_fixed_or_elastic_with_the_configured_placement():
    from maskgan.training.train import _scaling

    cfg = config.from_dict({"data": {"uri": "d"}, "train": {"num_workers": 4, "cpus_per_worker": 2.0}})
    fixed = _scaling(cfg, use_gpu=True)
    assert fixed.num_workers == 4 and fixed.placement_strategy == "PACK"
    assert fixed.resources_per_worker == {"CPU": 2.0, "GPU": 1}
    elastic = _scaling(cfg.replace(train={"min_workers": 1, "placement": "STRICT_SPREAD",
                                          "worker_resource": "maskgan_worker"}), use_gpu=False)
    assert elastic.num_workers == (1, 4) and elastic.elasticity_enabled
    assert elastic.placement_strategy == "STRICT_SPREAD"
    assert elastic.resources_per_worker == {"CPU": 2.0, "maskgan_worker": 1}
