#!/usr/bin/perl
# Writes a small GeoLite2-Country-shaped MaxMind DB for the tests, with the real MaxMind writer
# (Debian: libmaxmind-db-writer-perl). Usage: make-mmdb.pl OUT.mmdb NETWORK=CC [NETWORK=CC ...]
use strict;
use warnings;
use MaxMind::DB::Writer::Tree;

my ($out, @entries) = @ARGV;
die "usage: $0 OUT.mmdb NETWORK=CC ...\n" unless $out && @entries;

my $tree = MaxMind::DB::Writer::Tree->new(
    ip_version            => 6,
    record_size           => 24,
    database_type         => 'GeoLite2-Country',
    languages             => ['en'],
    description           => { en => 'relay test country database' },
    map_key_type_callback => sub {
        my $key = shift;
        return { country => 'map', iso_code => 'utf8_string', geoname_id => 'uint32', names => 'map', en => 'utf8_string' }->{$key};
    },
    # The tests use loopback and documentation ranges, which the writer drops by default.
    remove_reserved_networks => 0,
    alias_ipv6_to_ipv4       => 1,
);
for my $e (@entries) {
    my ($net, $cc) = split /=/, $e, 2;
    $tree->insert_network($net, { country => { iso_code => $cc, names => { en => $cc } } });
}
open my $fh, '>:raw', $out or die "cannot write $out: $!";
$tree->write_tree($fh);
close $fh or die "cannot close $out: $!";
