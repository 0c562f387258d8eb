"""Compose a command line's config the way Hydra will, every job of a sweep included, before anything runs.

run.py calls `precheck()` first so that Hydra's own errors (a value of the wrong type, a key or option that does
not exist, an override or a YAML file that does not parse) exit 2 with one line, as every other config error
does, instead of Hydra's exit 1 after it has made a sweep folder. engine.check composes each experiment file with
`jobs()`. Both go through Hydra's own loader and its BasicSweeper's expansion, so what passes here is what
Hydra composes for each job; the run itself then validates each job's values (engine/validate.py). An Optuna
sweep picks its points while it runs, so its search space's corners stand for them: every choice, and each end
of every interval and range.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from yaml import YAMLError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
CONFIG_ERRORS = (HydraException, OmegaConfBaseException, YAMLError)  # what a bad file, override or value raises
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
MAX_CORNERS = 64  # more corners than this: each parameter's values in turn, the others at their first value


def jobs(overrides: list[str], multirun: bool | None = None, config_dir: Path = CONF_DIR,
         config_name: str = "config") -> list[tuple[list[str], DictConfig]]:
    """Each job's command-line overrides and composed config. multirun=None: the mode Hydra would pick (-m, or
    hydra.mode in the config). A sweep expands hydra.sweeper.params and the command line's sweeps as BasicSweeper
    does; an Optuna sweep, its search space's corners (_optuna_points); another sweeper decides its points at run
    time: only its base config is composed. Raises Hydra's and OmegaConf's exceptions unchanged; one_line() words
    them."""
    import engine.schema  # noqa: F401  (the schemas the config's defaults name)
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3", job_name="lorapod"):
        hydra = GlobalHydra.instance().hydra
        if multirun is None:
            multirun = hydra.get_mode(config_name=config_name, overrides=list(overrides)) == RunMode.MULTIRUN
        if not multirun:
            cfg = hydra.compose_config(config_name, list(overrides), run_mode=RunMode.RUN,
                                       with_log_configuration=False)
            return [(list(overrides), cfg)]
        base = _sweep_base(hydra, config_name, overrides)
        sweeper = base.hydra.sweeper.get("_target_")
        if sweeper == BASIC_SWEEPER:
            points = _points(base, hydra)
        elif sweeper == OPTUNA_SWEEPER:
            points = _optuna_points(base)
        else:
            return [(list(overrides), base)]
        return [(point, hydra.config_loader.load_sweep_config(base, point)) for point in points]


def sweep_base(overrides: list[str], config_dir: Path = CONF_DIR, config_name: str = "config") -> DictConfig:
    """The config a sweep's jobs start from (Hydra's multirun master config: hydra.sweeper.params not yet
    applied); for a command line without a sweep, the config its one job runs."""
    import engine.schema  # noqa: F401
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3", job_name="lorapod"):
        return _sweep_base(GlobalHydra.instance().hydra, config_name, overrides)


def _sweep_base(hydra, config_name: str, overrides: list[str]) -> DictConfig:
    from hydra.types import RunMode

    return hydra.compose_config(config_name, list(overrides), run_mode=RunMode.MULTIRUN, with_log_configuration=False)


def _points(base: DictConfig, hydra) -> list[list[str]]:
    """The override lists BasicSweeper.sweep() would launch: the config's hydra.sweeper.params, then the
    command line's task overrides (a later one of the same key wins), one job per combination."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = base.hydra.sweeper.get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(OmegaConf.to_container(base.hydra.overrides.task))
    parsed = OverridesParser.create(config_loader=hydra.config_loader).parse_overrides(arguments)
    return [point for batch in BasicSweeper.split_arguments(parsed, None) for point in batch]


def _optuna_points(base: DictConfig) -> list[list[str]]:
    """Override lists at the corners of an Optuna search space (hydra.sweeper.params, then the command line's
    overrides, as OptunaSweeper.sweep() reads them): every choice, both ends of each interval and range, written
    as the sweeper writes a trial's values. A value that does not fit its key fails here, not in trial 7."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Transformer

    params = base.hydra.sweeper.get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(OmegaConf.to_container(base.hydra.overrides.task))
    fixed: dict[str, str] = {}
    axes: dict[str, list] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        if not override.is_sweep_override():
            fixed[key] = override.get_value_element_as_str()
            axes.pop(key, None)  # as in the sweeper, a later fixed value of a key wins over its search space
        elif override.is_interval_sweep():
            value = override.value()
            axes[key] = [value.start, value.end]
        else:  # choice, or range (Optuna samples a range's steps; its ends are enough here)
            values = list(override.sweep_iterator(transformer=Transformer.encode))
            axes[key] = values if override.is_choice_sweep() else values[:1] + values[-1:]
        if key in axes:
            fixed.pop(key, None)
    names = list(axes)
    combos = list(itertools.product(*axes.values()))
    if len(combos) > MAX_CORNERS:
        first = [values[0] for values in axes.values()]
        combos = [tuple(first[:i] + [v] + first[i + 1:]) for i, values in enumerate(axes.values()) for v in values]
    return [[f"{k}={v}" for k, v in zip(names, combo)] + [f"{k}={v}" for k, v in fixed.items()] for combo in combos]


def one_line(exc: BaseException) -> str:
    """Hydra's error as one line: what is wrong, with which key, option or file, and what to do."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(exc, OverrideParseException):
        return (f"cannot parse the override {exc.override!r}: {_flat(exc.message)}; quote a value holding brackets, "
                "commas or spaces (see https://hydra.cc/docs/advanced/override_grammar/basic/)")
    if isinstance(exc, MissingConfigException):
        wanted = exc.missing_cfg_file or ""
        group, _, option = wanted.rpartition("/")
        if exc.options and group:
            return f"{group}={option}: there is no conf/{wanted}.yaml; choose one of {', '.join(exc.options)}"
        return f"{_flat(str(exc))}: check the name, and the files under conf/"
    yaml_error = next((e for e in (exc, exc.__cause__, exc.__context__) if _is_yaml_error(e)), None)
    if yaml_error is not None:
        return _yaml_line(yaml_error)
    cause = exc.__cause__ or exc.__context__
    key = getattr(cause, "full_key", None) or getattr(exc, "full_key", None)
    message = _flat(str(exc))
    unknown = re.match(r"Could not override '([^']+)'.*use (\+\S+)", message)
    if unknown and "No match in the defaults list" in message:
        return (f"{unknown.group(1)}: that group is not in conf/config.yaml's defaults, so there is nothing to "
                f"override; add it with {unknown.group(2)}")
    if unknown:
        return (f"{unknown.group(1)}: there is no such key in the config; check its spelling (`python run.py "
                f"--cfg job` shows every key), or add a new key with {unknown.group(2)}")
    if type(cause).__name__ == "ConfigKeyError" and key:
        where = re.match(r"In '([^']+)'", message)
        return (f"{key}: there is no such key in the config{f' (set in {where.group(1)}.yaml)' if where else ''}; "
                "check its spelling (`python run.py --cfg job` shows every key)")
    merging = re.match(r"Error merging override (\S+)", message)
    if merging and cause is not None:
        return f"{merging.group(1)}: {_flat(str(cause))}; give {key or 'that key'} a value of its type"
    text = message
    if cause is not None and _flat(str(cause)) not in text:
        text += ": " + _flat(str(cause))
    return text + (f" (key {key})" if key and key not in text else "")


def _is_yaml_error(exc: BaseException | None) -> bool:
    return isinstance(exc, YAMLError)


def _yaml_line(exc) -> str:
    """A YAML syntax error as `file, line N: problem`: PyYAML's marks count from 0."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return f"a conf file is not valid YAML: {_flat(str(exc))}"
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}"
    context = f" ({exc.context})" if getattr(exc, "context", None) else ""
    return f"{where}: {exc.problem}{context}: fix the YAML syntax there"


def _flat(text: str) -> str:
    """The first lines of an error that say something, on one line (Hydra's reprint of the search path and
    OmegaConf's object_type/reference_type lines repeat what the key already says)."""
    keep = []
    for line in str(text).splitlines():
        line = line.strip()
        if not line or re.match(r"(full_key|object_type|reference_type|Config search path|provider=|"
                                r"Available options|See https://hydra.cc|Set the environment variable)", line):
            if line.startswith(("Config search path", "Available options")):
                break
            continue
        keep.append(line.rstrip("."))
    return "; ".join(keep)


def precheck(argv: list[str] | None = None, conf_dir: Path = CONF_DIR) -> None:
    """Compose every job the command line asks for; on a Hydra error print one line and exit 2. Leaves --help,
    --hydra-help, --info, shell completion and an extra --config-dir to Hydra itself."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.help or args.hydra_help or args.info or args.shell_completion or args.config_dir:
        return
    config_dir = (conf_dir.parent / args.config_path).resolve() if args.config_path else conf_dir
    try:
        jobs(list(args.overrides), multirun=True if args.multirun else None, config_dir=config_dir,
             config_name=args.config_name or "config")
    except CONFIG_ERRORS as exc:
        sys.stderr.write(f"invalid config: {one_line(exc)}. Nothing was started and nothing was rented.\n")
        sys.exit(2)
    except Exception:  # not a config error, so not ours to word: Hydra reports it its own way, as before
        return
