"""The IPython face: the extension object, its magics and the %%provrun orchestration."""
