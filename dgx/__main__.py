from dgx.cli import main

main()
