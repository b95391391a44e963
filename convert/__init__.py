"""Converters into LightNER's formats: DeepKE checkpoints to adapters, and NER data between file formats."""
