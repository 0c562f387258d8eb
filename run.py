"""lorapod: turn episodic memories into a LoRA adapter.  python run.py --help"""
import sys

import hydra

import engine


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg) -> None:
    engine.run(cfg)


if __name__ == "__main__":
    main()
    sys.exit(engine.exit_status())
