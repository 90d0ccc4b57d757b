# The demo's AR model, stage 1 of 4 (paper supp. Sec. 6: images, L2 loss): tiny CPU sizes on the shapes tokens.
# These are train_ar.py's defaults, named here with why (measurements: NOTES.md). Each next stage starts from
# the previous one's checkpoint: config/ar_shapes_stage2.py, 3, 4.
# $ python train_ar.py config/ar_shapes_stage1.py
out_dir = "out/shapes/ar_stage1"
init_from = "scratch"
data_dir = "data/shapes_tokens"  # python tokenizer.py encode ... --out data/shapes_tokens
image_video_ratio = 1.0  # images only
loss = "l2"
token_norm = True  # standardised deep tokens: keyframe 1 moved the asked way in 47% against 36% on raw tokens
backbone = "mini-gpt2"  # 4 layers, width 256 (ar_model.BACKBONES)
text_len = 16  # shapes captions are 5-7 BPE tokens + SOT/EOT
max_keyframes = 5  # 33-frame clips, one keyframe every 8 frames (kept equal in all stages)
batch_size = 32
learning_rate = 1e-3  # the paper's 1e-4 is for a pretrained LM at batch 256; a tiny model from scratch wants more
min_lr = 1e-4
max_iters = 400
lr_decay_iters = 400
warmup_iters = 50
eval_interval = 200
eval_iters = 10
log_interval = 50
