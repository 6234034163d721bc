package bench

import "strings"

// Vocabularies of the generated text: ordinary business words and names, so the data compresses the
// way a real app's data does (neither like repeated strings nor like random bytes).
var (
	words = strings.Fields(`account address advance agreement amount answer application approval area
article assessment asset attachment balance bank basket batch benefit billing booking branch budget
building business calendar campaign capacity carrier case catalogue category certificate change
channel charge check claim client comment commission company complaint condition confirmation contact
container contract cost country coupon credit currency customer damage data date deadline delivery
department deposit description design detail device discount dispatch document driver due employee
entry equipment estimate event expense export facility factory fee field file finance form freight
fund goods group guarantee handling holiday hour import incident income inspection installation
insurance interest inventory invoice issue item journal label ledger level licence limit line list
loan location machine maintenance manager margin market material meeting member message method
milestone model month network note notice number offer office operation option order organisation
owner package packing page part partner payment penalty period permit phase plan planning policy
portal position premium price priority process product profile project promotion proposal purchase
quality quantity quarter quote rate reason receipt record refund region registration reminder rental
repair report request reservation resource return revenue review risk route salary sale schedule
scope season sector segment service session shipment shop site size sku source staff stage standard
statement status stock storage store subscription summary supplier supply support survey system tariff
task tax team template term territory ticket time total tracking transaction transfer transport trip
unit update user value vehicle vendor version visit voucher warehouse warranty week weight work year
approved pending rejected urgent delayed received shipped returned cancelled completed open closed
new updated reviewed signed paid overdue partial final draft internal external monthly annual
the a of to and for with on from by at in per after before within under over about against`)
	firstNames = strings.Fields(`Anna Bram Carla Daan Emma Finn Greta Hugo Iris Jasper Julia Kees Lara
Lucas Maria Milan Noor Olaf Petra Quinten Rosa Sander Sofie Thijs Ulla Vera Willem Xander Yara Zoe
James Olivia Liam Amelia Noah Isla Oliver Ava Elijah Mia Mateo Sophia Lucas Chloe Levi Ella Ethan Lily
Mohammed Fatima Ahmed Aisha Wei Mei Hiroshi Yuki Carlos Lucia Pierre Claire Giorgio Chiara`)
	lastNames = strings.Fields(`Jansen Vries Bakker Visser Smit Meijer Mulder Bos Vos Peters Hendriks
Dekker Brouwer Dijkstra Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez
Hernandez Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White
Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill
Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Muller Schmidt Schneider
Fischer Weber Rossi Russo Ferrari Esposito Bianchi Romano Dubois Laurent Moreau Tanaka Suzuki Kim Park`)
	domains = strings.Fields(`example.com example.org example.net mail.example.com corp.example.com
shop.example.nl example.de example.co.uk customers.example.io partner.example.eu`)
	cities = strings.Fields(`Amsterdam Rotterdam Utrecht Eindhoven Groningen Tilburg Almere Breda Nijmegen
Haarlem Arnhem Zwolle Leiden Maastricht Delft Antwerp Brussels Ghent Berlin Hamburg Munich Cologne
Frankfurt London Manchester Leeds Paris Lyon Madrid Barcelona Milan Rome Vienna Zurich Copenhagen Oslo
Stockholm Helsinki Dublin Lisbon Warsaw Prague Budapest Boston Chicago Denver Austin Seattle Toronto`)
	countries = strings.Fields(`Netherlands Belgium Germany France Spain Italy Austria Switzerland Denmark
Norway Sweden Finland Ireland Portugal Poland Czechia Hungary Canada Luxembourg`)
)
