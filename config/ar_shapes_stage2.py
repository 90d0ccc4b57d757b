# AR model, stage 2 of 4, from stage 1's weights. The paper's stage 2 is images with the GMM loss; here
# it is videos with the L2 loss, and the GMM starts in stage 3 from the L2 prediction
# (train_ar.load_matching: every component's mean = the L2 head): on the shapes tokens the L2 loss taught the
# caption's motion and the GMM NLL, from the same start, undid it (README, "What made it learn motion").
# $ python train_ar.py config/ar_shapes_stage2.py
out_dir = "out/ar_shapes_stage2"
init_from = "out/ar_shapes_stage1/ckpt.pt"
data_dir = "data/shapes_tokens"
image_video_ratio = 0.0  # videos only: 1,200 steps took keyframe 1's direction from text to 99% on seed 0's tokens (NOTES.md)
loss = "l2"
max_keyframes = 5
batch_size = 16
learning_rate = 1e-3
min_lr = 1e-4
max_iters = 2000
lr_decay_iters = 2000
warmup_iters = 50
eval_interval = 500
eval_iters = 10
log_interval = 50
