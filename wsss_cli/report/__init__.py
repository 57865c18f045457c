"""The report page: :mod:`wsss_cli.report.collect` reads a workdir into plain data,
:mod:`wsss_cli.report.render` turns that data into one self-contained HTML page through
``templates/report.html.j2``."""
