# The demo's AR model, stage 2 of 4, from stage 1's weights: videos with the L2 loss. (The paper's stage 2 is images
# with the GMM loss; here the GMM starts in stage 3, from the L2 prediction: on the shapes tokens the L2 loss taught
# the caption's motion and the GMM NLL, started at once, undid it; NOTES.md, stop 17.)
# $ python train_ar.py config/ar_shapes_stage2.py
out_dir = "out/shapes/ar_stage2"
init_from = "out/shapes/ar_stage1/ckpt.pt"
image_video_ratio = 0.0  # videos only: 1,200 steps take keyframe 1's direction from text to 99% (seed 0's tokens)
batch_size = 16
max_iters = 1200
lr_decay_iters = 1200
