# AR model, stage 1 of 4 (paper supp. Sec. 6: images, L2 loss, 100k steps): tiny CPU sizes on the shapes tokens.
# $ python train_ar.py config/ar_shapes_stage1.py
# The next stages start from this one's checkpoint: config/ar_shapes_stage2.py, 3, 4.
out_dir = "out/ar_shapes_stage1"
init_from = "scratch"
data_dir = "data/shapes_tokens"  # written by tokenizer.py encode
image_video_ratio = 1.0  # images only
loss = "l2"
# Standardised deep tokens (ar_model token_norm): on the same 1,500 L2 steps of video tokens, keyframe 1 generated
# from the real keyframe 0 moved the asked way in 47% at step 500 against 36% on raw tokens (NOTES.md).
token_norm = True
backbone = "mini-gpt2"  # 4 layers, width 256 (ar_model.BACKBONES)
text_len = 16  # shapes captions are 5-7 BPE tokens + SOT/EOT
max_keyframes = 5  # 33-frame clips, one keyframe every 8 frames (kept equal in all stages)
batch_size = 32
learning_rate = 1e-3  # paper 1e-4 at batch 256 on a pretrained LM; a tiny model from scratch wants more
min_lr = 1e-4
max_iters = 1000
lr_decay_iters = 1000
warmup_iters = 50
eval_interval = 250
eval_iters = 10
log_interval = 50
