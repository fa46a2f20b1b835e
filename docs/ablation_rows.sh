#!/usr/bin/env bash
# The ablation rows of docs/ablation.md (run from the repository root; rows 1-2 at commit 9605392, the
# row-2 variance pinned at 0.25 by a one-line patch of TrajectoryDecoder.var in that checkout).
DATA=${DATA:-data/lafan1_h1.h5}
V1_INIT="tokenizer.net.init=gpt tokenizer.net.pos_emb=learned"
V1_OPT="train.lr=1e-3 train.lr_schedule=cosine train.warmup_steps=100 train.weight_decay=0.01 train.adam_beta2=0.99 train.eta_lr=1e-2 train.grad_clip_mode=global"
V1_SCHED="estimator.ess_target=0.5 estimator.beta.kind=cosine estimator.beta.start=2.0 estimator.beta.steps=300"
WORK="tokenizer.net.memory_skip=true tokenizer.posterior_init_std=0.25 train.recognition_lr_scale=0.2"
NOWORK="tokenizer.net.memory_skip=false tokenizer.posterior_init_std=null train.recognition_lr_scale=1.0"
REF_INIT="tokenizer.net.init=xavier tokenizer.net.pos_emb=sinusoidal"
REF_OPT="train.lr=3e-4 train.lr_schedule=constant train.warmup_steps=0 train.weight_decay=1e-4 train.adam_beta2=0.999 train.eta_lr=1e-3 train.grad_clip_mode=adaptive"
REF_SCHED="estimator.ess_target=0.33 estimator.beta.kind=exp estimator.beta.start=3.0 estimator.beta.steps=400"
COMMON="data.path=$DATA train.steps=400 train.seed=0 train.num_threads=1 train.eval_every=100 train.eval_windows=256 train.ckpt_every=100 train.progress=false"
V1_COMMON="data.path=${DATA_V1:-data/lafan1_h1_v1.h5} train.steps=400 train.num_threads=1 train.eval_every=100 train.eval_windows=256 train.ckpt_every=100 train.progress=false"
run() { python scripts/train_tokenizer.py out_dir=runs/ablation/$1 "${@:2}"; }
# rows 1-2, in a checkout of commit 9605392 (v1 features, v1 learned variance):
#   python scripts/train_tokenizer.py out_dir=runs/ablation/r01_v1 $V1_COMMON
#   (row 2: the same with TrajectoryDecoder.var returning 0.25 for every feature)
run r03_v2_v1choices $COMMON $V1_INIT $V1_OPT $V1_SCHED $WORK
run r04_refinit $COMMON $REF_INIT $V1_OPT $V1_SCHED $WORK
run r05_refopt $COMMON $V1_INIT $REF_OPT $V1_SCHED $WORK
run r06_refsched $COMMON $V1_INIT $V1_OPT $REF_SCHED $WORK
run r07_ref_work $COMMON $REF_INIT $REF_OPT $REF_SCHED $WORK
run r08_ref_nowork $COMMON $REF_INIT $REF_OPT $REF_SCHED $NOWORK
run r09_sinusoidal $COMMON tokenizer.net.init=gpt tokenizer.net.pos_emb=sinusoidal $V1_OPT $V1_SCHED $WORK
run r10_learned_var $COMMON $V1_INIT $V1_OPT $V1_SCHED $WORK tokenizer.net.variance=learned
