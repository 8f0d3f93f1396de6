ip netns exec hgold-c1 traceroute -n -q 2 -N 1 -w 1 198.51.100.10 >/dev/null
ip netns exec hgold-c1 ping -n -c 3 -i 0.2 198.51.100.10 >/dev/null
ip netns exec hgold-c2 sh -c 'for i in 1 2 3; do echo probe | socat -u - udp:198.51.100.10:9; sleep 0.1; done'
ip netns exec hgold-c2 ping -n -c 2 -i 0.2 -s 1200 -M do 198.51.100.10 >/dev/null
