"""menas: multi-trial evolutionary neural architecture search with lottery tickets."""

__version__ = "0.1.0"
