from noisecli.cli import main

main()
