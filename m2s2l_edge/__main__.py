from m2s2l_edge.cli.app import main

main()
