"""Perturbation methods: occlusion and LIME."""
