"""The built-in configs, installed as the package ``cutedge.configs`` (see pyproject.toml).

boards/, models/, network/ and experiments/ hold YAML only; ``controller.config.configs_dir``
finds them through ``importlib.resources``, so they are found the same way in a wheel, an sdist
build and an editable install.
"""
