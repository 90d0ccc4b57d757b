# AR model, stage 2 of 4 (paper: images, GMM loss, 100k steps), from stage 1's weights.
# Loss L2 -> GMM resizes the head: the output projection's last layer starts fresh (logged).
# $ python train_ar.py config/ar_shapes_stage2.py
out_dir = "out/ar_shapes_stage2"
init_from = "out/ar_shapes_stage1/ckpt.pt"
data_dir = "data/shapes_tokens"
image_video_ratio = 1.0
loss = "gmm"
gmm_k = 16
max_keyframes = 5
batch_size = 32
learning_rate = 1e-3
min_lr = 1e-4
max_iters = 1000
lr_decay_iters = 1000
warmup_iters = 50
eval_interval = 250
eval_iters = 10
log_interval = 50
