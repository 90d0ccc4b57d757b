"""
nanoGPT-style configuration: a script keeps its settings as module-level globals
with defaults, then calls

    config = configure(globals(), sys.argv[1:])

Each argument is either a plain-Python config file (`config/shapes.py`), executed and
its names applied in order, or a `--key=value` override. Only keys that already exist
as globals can be set, and a value must have the type of the default (an int may set a
float; a default of None accepts anything), so a typo is an error naming the key,
never a silent new global. A resumed run checks its settings against the checkpoint's
(`check_resume`).
"""
import ast
import os
import sys


class ConfigError(ValueError):
    pass


def _known_keys(defaults):
    return {k for k, v in defaults.items()
            if not k.startswith("_") and isinstance(v, (int, float, bool, str, tuple, list, type(None)))}


def _checked(key, value, default, source):
    """Return `value` if it may replace `default`, else raise ConfigError naming the key."""
    if default is None or value is None:
        return value
    if isinstance(default, bool) != isinstance(value, bool):  # bool is an int in Python: keep them apart
        raise ConfigError(f"{source}: {key} must be {type(default).__name__}, got {value!r}")
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if not isinstance(value, type(default)):
        raise ConfigError(f"{source}: {key} must be {type(default).__name__}, "
                          f"got {type(value).__name__} {value!r}")
    return value


def _parse_value(text, default):
    """'3' -> 3, '1e-4' -> 1e-4, 'True' -> True; text stays a string when the default is one."""
    if isinstance(default, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # _checked reports it if a string is the wrong type here


def apply_config(defaults, argv):
    """Apply config files and --key=value flags from `argv` to the dict `defaults` in place.

    Returns the dict of settings (the known keys and their final values).
    Raises ConfigError with the offending key, file or flag in the message.
    """
    known = _known_keys(defaults)
    for arg in argv:
        if arg.startswith("--"):
            if "=" not in arg:
                raise ConfigError(f"flag {arg!r} must look like --key=value")
            key, text = arg[2:].split("=", 1)
            if key not in known:
                raise ConfigError(f"unknown config key {key!r} (flag {arg!r}); known keys: {', '.join(sorted(known))}")
            defaults[key] = _checked(key, _parse_value(text, defaults[key]), defaults[key], f"flag {arg!r}")
        else:
            try:
                with open(arg) as f:
                    source = f.read()
            except OSError as e:
                raise ConfigError(f"cannot read config file {arg!r}: {e.strerror}") from None
            file_globals = {}
            exec(compile(source, arg, "exec"), file_globals)
            for key, value in file_globals.items():
                if key.startswith("_") or key in ("__builtins__",) or callable(value) or type(value).__name__ == "module":
                    continue
                if key not in known:
                    raise ConfigError(f"unknown config key {key!r} in {arg}; known keys: {', '.join(sorted(known))}")
                defaults[key] = _checked(key, value, defaults[key], arg)
    return {k: defaults[k] for k in sorted(known)}


def configure(defaults, argv):
    """apply_config for a script's entry point: a bad key or type exits with one clear line."""
    try:
        return apply_config(defaults, argv)
    except ConfigError as e:
        sys.exit(f"config error: {e}")


# settings that steer a run without changing what it computes: a resume may change them (max_iters too: the
# learning-rate schedule follows lr_decay_iters, so a run may be stopped early and continued further)
RUN_ONLY = ("out_dir", "init_from", "override_on_resume", "device", "compile", "log_interval", "eval_interval",
            "eval_iters", "max_bad_steps", "max_iters")


def resume_conflicts(saved, current, override_on_resume="", run_only=RUN_ONLY):
    """[(key, value now, value in the checkpoint)] for every setting that differs from the checkpoint's, except
    the run-only ones and those named in override_on_resume (comma-separated keys)."""
    allowed = set(run_only) | {k.strip() for k in override_on_resume.split(",") if k.strip()}
    return [(k, v, saved[k]) for k, v in sorted(current.items())
            if k not in allowed and k in saved and not _same(saved[k], v)]


def _same(a, b):
    """Equal settings; two spellings of one existing path (relative / absolute) are the same."""
    if a == b:
        return True
    return isinstance(a, str) and isinstance(b, str) and os.path.exists(a) and os.path.realpath(a) == os.path.realpath(b)


def check_resume(saved, current, ckpt_path, run_only=RUN_ONLY):
    """Exit with one line listing the settings that differ from the checkpoint's, unless overridden by name."""
    bad = resume_conflicts(saved, current, current.get("override_on_resume", ""), run_only)
    if bad:
        sys.exit(f"config error: resuming {ckpt_path} with other settings than it was trained with: "
                 + "; ".join(f"{k}={now!r} (checkpoint: {was!r})" for k, now, was in bad)
                 + f". Use the checkpoint's, or accept them with --override_on_resume={','.join(k for k, _, _ in bad)}")
