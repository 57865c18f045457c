"""The report page: :mod:`wsss_cli.report.collect` reads a workdir into plain data (its parts
in :mod:`~wsss_cli.report.runinfo`, :mod:`~wsss_cli.report.evaluations`,
:mod:`~wsss_cli.report.diagnosis`, :mod:`~wsss_cli.report.curves`,
:mod:`~wsss_cli.report.samples` and
:mod:`~wsss_cli.report.pictures`), :mod:`wsss_cli.report.render` turns that data into one
self-contained HTML page through ``templates/report.html.j2``."""
