"""lorapod: turn episodic memories into a LoRA adapter.  python run.py --help"""
import sys

import hydra

import engine
from engine import compose
from engine.sweep import objective as sweep_objective


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg) -> float | None:
    # The objective a sweeper such as Optuna minimises (engine/sweep/objective.py): the run's eval loss after training,
    # None when it did not succeed. The process's exit code is engine.exit_status()'s, below.
    engine.run(cfg)
    return engine.objective()


if __name__ == "__main__":
    # Hydra reports its own errors (lora.r=abc, nosuch=1, model=nosuch) with exit 1, some after making a sweep
    # folder; composing every job first makes them exit 2 with one line, like any bad config, before anything.
    compose.precheck()
    sweep_objective.show_study_lines()
    main()
    sys.exit(engine.exit_status())
