import os

import pytest

from configurator import ConfigError, apply_config, configure


def defaults():
    return {"batch_size": 8, "learning_rate": 1e-3, "compile": False, "out_dir": "out", "betas": (0.9, 0.98),
            "init_from": None}


def test_file_then_flags_override(tmp_path):
    cfg_file = tmp_path / "cfg.py"
    cfg_file.write_text("import math\nbatch_size = 32\nlearning_rate = 2 * math.pi\nout_dir = 'runs/x'\n")
    g = defaults()
    settings = apply_config(g, [str(cfg_file), "--batch_size=64", "--compile=True", "--learning_rate=1",
                                "--out_dir=runs/y", "--init_from=resume"])
    assert g["batch_size"] == 64 and g["compile"] is True and g["out_dir"] == "runs/y" and g["init_from"] == "resume"
    assert g["learning_rate"] == 1.0 and isinstance(g["learning_rate"], float)  # int accepted for a float
    assert settings["batch_size"] == 64 and "math" not in settings


def test_unknown_key_names_it(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'batchsize'"):
        apply_config(defaults(), ["--batchsize=3"])
    cfg_file = tmp_path / "typo.py"
    cfg_file.write_text("lerning_rate = 1e-4\n")
    with pytest.raises(ConfigError, match=r"'lerning_rate' in .*typo\.py"):
        apply_config(defaults(), [str(cfg_file)])


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match="batch_size must be int, got float 2.5"):
        apply_config(defaults(), ["--batch_size=2.5"])
    with pytest.raises(ConfigError, match="compile must be bool"):
        apply_config(defaults(), ["--compile=1"])
    with pytest.raises(ConfigError, match="learning_rate must be float"):
        apply_config(defaults(), ["--learning_rate=fast"])


def test_bad_flag_and_missing_file_and_exit():
    with pytest.raises(ConfigError, match="--key=value"):
        apply_config(defaults(), ["--compile"])
    with pytest.raises(ConfigError, match="cannot read config file 'nope.py'"):
        apply_config(defaults(), ["nope.py"])
    with pytest.raises(SystemExit, match="config error: unknown config key 'x'"):
        configure(defaults(), ["--x=1"])


def test_resume_conflicts(tmp_path):
    from configurator import resume_conflicts
    saved = {"lr": 1e-3, "data_dir": str(tmp_path), "out_dir": "a", "seed": 0}
    now = {"lr": 3e-4, "data_dir": os.path.relpath(tmp_path), "out_dir": "b", "seed": 0, "new_key": 1}
    assert resume_conflicts(saved, now) == [("lr", 3e-4, 1e-3)]  # one path in two spellings; out_dir is run-only
    assert resume_conflicts(saved, now, override_on_resume="lr") == []
    assert resume_conflicts(saved, dict(now, data_dir=str(tmp_path / "other")), "lr") == [
        ("data_dir", str(tmp_path / "other"), str(tmp_path))]
