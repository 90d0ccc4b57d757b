# The demo's AR model, stage 3 of 4 (paper: GMM loss), from stage 2's weights. Loss L2 -> GMM resizes the head:
# every component's mean starts as stage 2's L2 prediction, variances and mixture logits start fresh.
# $ python train_ar.py config/ar_shapes_stage3.py
out_dir = "out/shapes/ar_stage3"
init_from = "out/shapes/ar_stage2/ckpt.pt"
image_video_ratio = 0.0  # videos only, as stage 2
loss = "gmm"
gmm_k = 16
batch_size = 16
learning_rate = 1e-4  # the paper's; 3e-4 lost some of the motion stage 2 learned
max_iters = 600  # 300 -> 1,200 took direction 62.9 -> 74.3% (stop 22); 600 scores as 1,200 on 3 seeds, 3 min sooner
lr_decay_iters = 600
sample_temperature = 0.0  # the most likely component: decoded direction 70% against 51% at temperature 1
