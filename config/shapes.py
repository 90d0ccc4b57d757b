# The tiny CPU configuration of the deep tokenizer on the shapes set (32 x 32, 9-frame clips).
out_dir = "out/shapes/tokenizer"
data_dir = "data/shapes"
