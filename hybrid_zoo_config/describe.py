"""Bounds of ``hybrid-zoo describe`` (torch-free: the command line checks them before torch loads)."""

# describe runs one forward pass at the asked size: 32 px is the models' smallest input; at 1,024 px the attention
# of stride 8 already holds about 300 MB, and the next doublings need gigabytes
MIN_IMG_SIZE, MAX_IMG_SIZE = 32, 1024
MAX_IN_CHANS = 64
