// tc BPF programs that stand in for VLAN subinterfaces, which this test machine's kernel lacks
// (CONFIG_VLAN_8021Q and CONFIG_NET_ACT_VLAN are off). Used by make_captures.sh only:
//   "tag"   (egress):  IPv4 and ARP frames of 10.99.100.0/24 leave with an 802.1Q tag, VLAN 100;
//                      frames of 10.99.120.0/24 leave double tagged: 802.1ad VLAN 300 outside,
//                      802.1Q VLAN 20 inside.
//   "untag" (ingress): removes every tag again, so the stack on the other side answers.
// The kernel adds the tags (bpf_skb_vlan_push); tcpdump on the interface sees the frames with them.
// Build: clang -O2 -target bpfel -I/usr/include/x86_64-linux-gnu -c vlan_tag.bpf.c -o vlan_tag.o
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>

static long (*bpf_skb_vlan_push)(struct __sk_buff *skb, __be16 proto, __u16 tci) = (void *)BPF_FUNC_skb_vlan_push;
static long (*bpf_skb_vlan_pop)(struct __sk_buff *skb) = (void *)BPF_FUNC_skb_vlan_pop;

#define SEC(name) __attribute__((section(name), used))
// Tag protocol identifiers in network byte order (BPF here is little-endian).
#define TPID_8021Q 0x0081
#define TPID_8021AD 0xa888

// Returns 100 or 120 when the frame belongs to 10.99.100.0/24 or 10.99.120.0/24, else 0.
static __always_inline int subnet_of(struct __sk_buff *skb)
{
    unsigned char *data = (unsigned char *)(long)skb->data;
    unsigned char *end = (unsigned char *)(long)skb->data_end;
    if (data + 14 + 28 > end) {
        return 0;
    }
    unsigned char *a = 0, *b = 0;
    if (data[12] == 0x08 && data[13] == 0x00) {  // IPv4: source and destination address
        a = data + 14 + 12;
        b = data + 14 + 16;
    } else if (data[12] == 0x08 && data[13] == 0x06) {  // ARP: sender and target protocol address
        a = data + 14 + 14;
        b = data + 14 + 24;
    } else {
        return 0;
    }
    if (a[0] == 10 && a[1] == 99 && (a[2] == 100 || a[2] == 120)) {
        return a[2];
    }
    if (b[0] == 10 && b[1] == 99 && (b[2] == 100 || b[2] == 120)) {
        return b[2];
    }
    return 0;
}

SEC("tag") int tag_frames(struct __sk_buff *skb)
{
    int subnet = subnet_of(skb);
    if (subnet == 100) {
        bpf_skb_vlan_push(skb, TPID_8021Q, 100);
    } else if (subnet == 120) {
        bpf_skb_vlan_push(skb, TPID_8021Q, 20);    // inner
        bpf_skb_vlan_push(skb, TPID_8021AD, 300);  // outer
    }
    return TC_ACT_OK;
}

SEC("untag") int untag_frames(struct __sk_buff *skb)
{
    for (int i = 0; i < 2; ++i) {
        if (skb->vlan_present) {
            bpf_skb_vlan_pop(skb);
        }
    }
    return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
