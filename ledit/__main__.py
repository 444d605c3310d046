from ledit.cli import main

main()
