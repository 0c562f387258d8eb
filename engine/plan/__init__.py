"""The plan before renting: what a run will cost, how long it will take, and whether it fits the GPU.

memory.py sizes the model, the LoRA, the optimizer state and the activations against gpu.vram_gb;
throughput.py finds seconds per step (a measured run of this machine, else conf/plan/default.yaml's table);
estimate.py puts the phases together into minutes and dollars per GPU candidate. stages/plan.py prints it and
refuses a run that does not fit or whose high estimate is over budget.max_usd, before anything is rented.
Pure arithmetic on the config: nothing here imports torch or touches the network.
"""
