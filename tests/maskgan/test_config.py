import pytest

from maskgan import config
from maskgan.config import ConfigError


def test_defaults_and_recipes_validate():
    assert config.from_dict({}).model.generator == "fc3"
    assert config.debug_cpu().train.num_workers == 2
    assert config.h200_x8("s3://b/data", "s3://b/runs").train.use_gpu is True


@pytest.mark.parametrize("data, needle", [
    ({"model": {"generatr": "fc3"}}, "model.generatr: unknown field"),
    ({"model": {"generator": "resnet"}}, "model.generator: 'resnet' is not allowed (allowed: fc3, fc_deep, conv)"),
    ({"objective": {"experiment": "exp4"}}, "objective.experiment: 'exp4' is not allowed"),
    ({"train": {"epochs": "3"}}, "train.epochs: expected an integer"),
    ({"train": {"epochs": 0}}, "train.epochs: must be > 0"),
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
    cfg = config.debug_cpu()
    assert cfg.replace(objective={"experiment": "exp3"}).objective.experiment == "exp3"
    with pytest.raises(ConfigError):
        cfg.replace(objective={"experiment": "nope"})
