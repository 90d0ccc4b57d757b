# The deep tokenizer of the demo: tiny sizes on the shapes set (32 x 32, 9-frame clips), 2,600 steps on a 2-core CPU.
# These are train_tokenizer.py's defaults, named here with why (measurements: NOTES.md, "Why config/shapes.py").
# $ python train_tokenizer.py config/shapes.py
out_dir = "out/shapes/tokenizer"  # sample.py's and evaluate.py's default --tokenizer_ckpt
data_dir = "data/shapes"  # python data.py shapes --out data/shapes
clip_pretrain_iters = 0  # a random frozen E: Q learns position from it in a fifth of the steps a stand-in CLIP needs
keyframe_loss_weight = 1.0  # with Q's position embedding, the redraw of the keyframes teaches Q where the object is
outline_loss_weight = 0.0  # 4 (outlines 5x): held-out shape +5-11 points, but T2V shape no better, worst "all" 61%
learning_rate = 2e-3  # the same quality in fewer steps than 1e-3
cfg_scale = 2.0  # the paper's 7.5 turns this small decoder's errors into speckle (PSNR 15.3 against 19.1 dB)
ddim_steps = 25  # what the guidance was measured with
unet_channels = (32, 48, 96)  # the deep levels' last quarter cost 20% of the step time and bought nothing
batch_size = 12  # 0.72x the time of a batch-16 step, at least as much learned per clip seen
max_iters = 2600  # twice 1,300: the in-between frames' direction 77-95% -> 91-96%, PSNR +1.8 dB (3 seeds)
lr_decay_iters = 2600
eval_interval = 1300
order_clips = 192  # the object's position first in the deep tokens, so the AR model cannot copy it from keyframe 0
