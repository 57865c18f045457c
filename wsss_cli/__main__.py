from wsss_cli.cli import main

main()
