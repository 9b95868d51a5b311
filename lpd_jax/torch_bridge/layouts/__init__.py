"""One module per PyTorch checkpoint layout, each defining `LAYOUT` (`convert.Layout`)."""
