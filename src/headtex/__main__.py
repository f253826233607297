from headtex.cli import main

main()
