# The demo's AR model, stage 4 of 4 (paper: motion-filtered videos only), from stage 3's weights. The paper keeps
# optical-flow motion scores in [0.5, 1.38]; data.motion_score is a cheaper measure in [0, 1] on which the shapes
# set's stills score 0 and moving objects 0.02-0.11, so the bound below drops the stills.
# $ python train_ar.py config/ar_shapes_stage4.py
out_dir = "out/shapes/ar"  # sample.py's default --ar_ckpt
init_from = "out/shapes/ar_stage3/ckpt.pt"
image_video_ratio = 0.0
min_motion = 0.01
loss = "gmm"
gmm_k = 16
batch_size = 16
learning_rate = 3e-5  # a light polish (not swept)
min_lr = 3e-6
max_iters = 200
lr_decay_iters = 200
warmup_iters = 20
sample_temperature = 0.0  # as stage 3
