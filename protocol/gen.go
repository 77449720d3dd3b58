package protocol

// Regenerate the wire types after editing protocol/proto/**.proto
// (needs protoc from Debian's protobuf-compiler and protoc-gen-go; .ci/run
// installs both):
//
//go:generate sh -c "protoc -I proto --go_out=pb --go_opt=paths=source_relative proto/hadoop/*.proto proto/hdfs/*.proto && mv pb/hadoop/*.go pb/hdfs/*.go pb/ && rmdir pb/hadoop pb/hdfs"
