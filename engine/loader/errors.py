"""The one exception a model that cannot be loaded raises: its message is the whole story."""


class ModelLoadError(ValueError):
    """A bad model source, checkpoint or tokenizer, found at start. The CLI prints the message as
    one line and exits 1; the message names the file, repo or number at fault."""
