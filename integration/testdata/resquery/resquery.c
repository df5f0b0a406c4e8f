// resquery looks names up with glibc's resolver API, as C programs and
// runtimes built on it do for SRV, TXT and MX records:
//   resquery query|search|send TYPE NAME
// (send builds the query with res_mkquery and sends it with res_send)
// prints one line per answer: "TYPE rdata".
#include <arpa/nameser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
	if (argc != 4) {
		fprintf(stderr, "usage: resquery query|search|send TXT|SRV|MX NAME\n");
		return 2;
	}
	int type = strcmp(argv[2], "SRV") == 0 ? ns_t_srv : strcmp(argv[2], "MX") == 0 ? ns_t_mx : ns_t_txt;
	unsigned char ans[4096];
	int n;
	if (strcmp(argv[1], "send") == 0) {
		unsigned char q[512];
		int ql = res_mkquery(ns_o_query, argv[3], ns_c_in, type, NULL, 0, NULL, q, sizeof q);
		n = ql < 0 ? -1 : res_send(q, ql, ans, sizeof ans);
	} else if (strcmp(argv[1], "search") == 0) {
		n = res_search(argv[3], ns_c_in, type, ans, sizeof ans);
	} else {
		n = res_query(argv[3], ns_c_in, type, ans, sizeof ans);
	}
	if (n < 0) {
		fprintf(stderr, "%s %s %s: h_errno %d\n", argv[1], argv[2], argv[3], h_errno);
		return 1;
	}
	ns_msg msg;
	if (ns_initparse(ans, n, &msg) < 0) return 1;
	for (int i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
		ns_rr rr;
		if (ns_parserr(&msg, ns_s_an, i, &rr) < 0) return 1;
		const unsigned char *rd = ns_rr_rdata(rr);
		char name[NS_MAXDNAME];
		switch (ns_rr_type(rr)) {
		case ns_t_txt:
			printf("TXT %.*s\n", rd[0], rd + 1);
			break;
		case ns_t_srv:
			if (dn_expand(ns_msg_base(msg), ns_msg_end(msg), rd + 6, name, sizeof name) < 0) return 1;
			printf("SRV %d %d %d %s\n", ns_get16(rd), ns_get16(rd + 2), ns_get16(rd + 4), name);
			break;
		case ns_t_mx:
			if (dn_expand(ns_msg_base(msg), ns_msg_end(msg), rd + 2, name, sizeof name) < 0) return 1;
			printf("MX %d %s\n", ns_get16(rd), name);
			break;
		}
	}
	return 0;
}
