# The paper's default AR model (supp. Sec. 6): Llama-3.2-1B, text 80 tokens, 16 keyframes of 16 x 1024 deep tokens,
# 16-component GMM, AdamW lr 1e-4 (0.9, 0.98), eps 1e-6, wd 0.05, 1k warm-up + cosine, global batch 256.
# This file is stage 3 (image:video 1:1); the other stages by flags, each from the previous checkpoint:
#   stage 1: --loss=l2 --image_video_ratio=1.0 --init_from=scratch     stage 2: --loss=gmm --image_video_ratio=1.0
#   stage 4: --image_video_ratio=0.0 --min_motion=... --max_iters=20000 (motion bounds on data.motion_score's scale)
# Its data: the paper's 0.5 keyframes a second (256 frames at 8 fps -> 16 keyframes), written by
#   python tokenizer.py encode --ckpt out/tokenizer_paper/ckpt.pt --manifest data/webvid/videos.csv
#       --out data/webvid_tokens --fps 8 --keyframe_interval 16 --max_keyframes 16
# $ torchrun --standalone --nproc_per_node=4 train_ar.py config/ar_paper_llama1b.py
# (train_ar.py's defaults are the tiny CPU configuration: every paper setting is named here)
out_dir = "out/ar_paper_llama1b"
init_from = "scratch"  # or out/<previous stage>/ckpt.pt
backbone = "weights/Llama-3.2-1B"  # a local directory with the released Llama-3.2-1B weights + tokenizer
from_scratch = False  # the paper fine-tunes the pretrained LM: a BACKBONES name (random weights) is an error
data_dir = "data/webvid_tokens"
image_video_ratio = 0.5
max_keyframes = 16
text_len = 80  # context 80 + (1 + 16) * 16 = 352
loss = "gmm"
gmm_k = 16
token_norm = False  # raw deep tokens
gmm_means_from_l2 = False  # the release re-initialises the head's last layer at the L2 -> GMM switch
text_drop_prob = 0.1
visual_drop_prob = 0.05
batch_size = 8
gradient_accumulation_steps = 32  # 8 x 32 = 256 sequences per step, over all GPUs
learning_rate = 1e-4
weight_decay = 0.05
beta1 = 0.9
beta2 = 0.98
adam_eps = 1e-6
min_lr = 1e-5  # the paper does not give the cosine floor
max_iters = 100000
lr_decay_iters = 100000
warmup_iters = 1000
eval_interval = 2000
eval_iters = 50
log_interval = 20
dtype = "bfloat16"
compile = True
# sampling defaults stored in the checkpoint (sample.py's): the authors' release values
sample_temperature = 1.0
sample_var_scale = 0.01
sample_cfg_scale = 1.0
sample_cfg_mode = "samples"  # the release's guidance, when sample.py --ar_cfg_scale turns it on
