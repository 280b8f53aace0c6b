"""FS-Vid2Vid (Wang et al., NeurIPS 2019), NVIDIA imaginaire's face model, our implementation."""
