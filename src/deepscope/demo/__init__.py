"""The demos behind ``deepscope demo``: FashionMNIST end to end (:mod:`.fashion`) and a pretrained ImageNet
model offline (:mod:`.imagenet`). Modules are imported on use, so importing deepscope stays light."""
