#!/bin/sh
# make.sh — regenerates the kernel-module signature vectors in this folder
# with the openssl CLI only, in the layout Debian's scripts/sign-file writes
# (see ../sigstore/kernel-module/PROVENANCE.md):
#   [module][CMS SignedData DER: detached, binary, no signed attributes, no
#   certificates][struct module_signature {0,0,2,0,0,0,0,0, be32 sig_len}]
#   ["~Module signature appended~\n"]
# `openssl cms -sign -binary -noattr -nocerts -nosmimecap -outform DER`
# (detached by default; -keyid for subjectKeyIdentifier) is the CLI form of
# sign-file's CMS_sign(CMS_NOCERTS|CMS_PARTIAL|CMS_BINARY|CMS_DETACHED) +
# CMS_add1_signer(CMS_NOCERTS|CMS_BINARY|CMS_NOSMIMECAP|CMS_NOATTR[|CMS_USE_KEYID]).
# Keys are throwaway (generated here, private keys not kept), certificates
# are self-signed like the kernel's certs/default_x509.genkey ones.
# The unsigned input is kmod's mod-simple-x86_64.ko (LGPL-2.1 testsuite),
# copied in ../sigstore/kernel-module/debian-sign-file/.
set -eu
cd "$(dirname "$0")"
MOD=../sigstore/kernel-module/debian-sign-file/mod-simple-x86_64.unsigned.ko
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cat > "$tmp/genkey" <<'CONF'
[ req ]
distinguished_name = req_distinguished_name
prompt = no
string_mask = utf8only
x509_extensions = myexts
[ req_distinguished_name ]
CN = sluice test module signing key
[ myexts ]
basicConstraints=critical,CA:FALSE
keyUsage=digitalSignature
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
CONF

newcert() { # name keyopts...
    name=$1
    shift
    openssl req -new -nodes -utf8 -sha256 -days 36500 -batch -x509 -config "$tmp/genkey" \
        "$@" -keyout "$tmp/$name.key" -out "$name.crt.pem" 2>/dev/null
}

be32() { # the 4 bytes of $1, big-endian
    printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) \
        $(($1 >> 8 & 255)) $(($1 & 255)))"
}

# append MODULE SIG OUT [ID_TYPE [SIG_LEN]]: module + sig + struct + magic
append() {
    n=$(wc -c < "$2")
    { cat "$1" "$2"; printf '\000\000'; printf "$(printf '\\%03o' "${4:-2}")"
      printf '\000\000\000\000\000'; be32 "${5:-$n}"; printf '~Module signature appended~\n'; } > "$3"
}

sign() { # key cert md out [extra openssl args]
    key=$1 cert=$2 md=$3 out=$4
    shift 4
    openssl cms -sign -binary -noattr -nocerts -nosmimecap -outform DER -md "$md" \
        -signer "$cert" -inkey "$tmp/$key.key" -in "$MOD" -out "$tmp/sig" "$@"
    append "$MOD" "$tmp/sig" "$out"
}

newcert rsa -newkey rsa:2048
newcert ec -newkey ec -pkeyopt ec_paramgen_curve:prime256v1
newcert other -newkey ec -pkeyopt ec_paramgen_curve:prime256v1
rm -f other.crt.pem.tmp

sign rsa rsa.crt.pem sha256 mod.rsa-sha256.ko
sign rsa rsa.crt.pem sha256 mod.rsa-sha256-keyid.ko -keyid
sign ec ec.crt.pem sha256 mod.ec-p256-sha256.ko
sign ec ec.crt.pem sha512 mod.ec-p256-sha512.ko
sign other other.crt.pem sha256 mod.other-key.ko

# Negative cases built from the valid RSA signature.
openssl cms -sign -binary -noattr -nocerts -nosmimecap -outform DER -md sha256 \
    -signer rsa.crt.pem -inkey "$tmp/rsa.key" -in "$MOD" -out "$tmp/sig"
append "$MOD" "$tmp/sig" mod.bad-id-type.ko 1
append "$MOD" "$tmp/sig" mod.sig-len-too-big.ko 2 100000
{ cat "$MOD"; printf '~Module signature appended~\n'; } > mod.truncated-trailer.ko
# one byte of the module body changed after signing
cp mod.rsa-sha256.ko mod.rsa-sha256.tampered.ko
printf '\001' | dd of=mod.rsa-sha256.tampered.ko bs=1 seek=200 conv=notrunc 2>/dev/null
rm -f other.crt.pem
echo "vectors written in $(pwd)"
